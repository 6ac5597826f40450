import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { startPgrev22Proxy } from './pgrev22-proxy.js';

/**
 * pgrev24: a process that ended its pool while the own opening AND its hedge hang on a
 * blackholed server (accepted, never answered) and statements wait (one without a limit):
 * the wake timer, the openings' limits and their sockets must not keep it alive.
 */
describe('pgrev24: exit with a hedge pending', () => {
  it('the process exits at once after pool.end() with two openings hanging and statements waiting', async () => {
    const proxy = await startPgrev22Proxy();
    try {
      const child = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          fileURLToPath(new URL('./pgrev24-exit-child.ts', import.meta.url)),
          proxy.url,
        ],
        {
          cwd: fileURLToPath(new URL('..', import.meta.url)),
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      );
      let out = '';
      let endedLine: { ended?: number; attempts?: number; timer?: boolean | null } = {};
      let endedAt = 0;
      child.stdout?.on('data', (chunk: Buffer) => {
        out += chunk;
        if (out.includes('"held"')) proxy.state.mode = 'blackhole';
        const line = out.split('\n').find((l) => l.includes('"ended"'));
        if (line && endedAt === 0) {
          endedAt = performance.now();
          endedLine = JSON.parse(line);
        }
      });
      const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const [code, signal] = await once(child, 'exit');
      clearTimeout(kill);
      const afterEndMs = Math.round(performance.now() - endedAt);
      console.log('pgrev24 exit', {
        code,
        signal,
        afterEndMs,
        endedLine,
        accepted: proxy.state.accepted,
      });
      expect(signal).toBeNull();
      expect(code).toBe(0);
      expect(endedAt).toBeGreaterThan(0);
      // Both openings were hanging when the pool ended (the business connection + 2 openings).
      expect(endedLine.attempts).toBe(2);
      expect(proxy.state.accepted).toBe(3);
      expect(afterEndMs).toBeLessThan(1_000);
    } finally {
      proxy.close();
    }
  }, 15_000);
});
