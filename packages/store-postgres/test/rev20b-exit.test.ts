/**
 * rev20b: a process whose store renewed on its own connection (the pool's only connection
 * busy) exits promptly: after pool.end(), and with allowExitOnIdle and no end at all (the own
 * connection lingers 10 s, it must not hold the process that long).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DATABASE_URL } from './pg-env.js';
import { useTable } from './rev20b-env.js';

const own = useTable('rev20b_x');
const TABLE = own.table;

async function run(mode: 'end' | 'idle') {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      fileURLToPath(new URL('./rev20b-exit-child.ts', import.meta.url)),
      DATABASE_URL,
      TABLE,
      mode,
    ],
    { cwd: fileURLToPath(new URL('..', import.meta.url)), stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  let endedAt = 0;
  child.stdout?.on('data', (chunk: Buffer) => {
    out += chunk;
    if (endedAt === 0 && out.includes('"ended"')) endedAt = performance.now();
  });
  const kill = setTimeout(() => child.kill('SIGKILL'), 15_000);
  const [code, signal] = await once(child, 'exit');
  clearTimeout(kill);
  return { code, signal, ok: out.includes('"ok":true'), afterMs: performance.now() - endedAt };
}

describe('rev20b: exit after renewing on the own connection', () => {
  it.each(['end', 'idle'] as const)(
    '%s: exits within 1.5 s',
    async (mode) => {
      const r = await run(mode);
      expect({ code: r.code, signal: r.signal, ok: r.ok }).toEqual({
        code: 0,
        signal: null,
        ok: true,
      });
      expect(r.afterMs).toBeLessThan(1_500);
    },
    20_000,
  );
});
