/**
 * rev20b: a process whose store renewed on its own connection (the pool's only connection
 * busy) exits promptly: after pool.end(), and with allowExitOnIdle and no end at all (the own
 * connection lingers 10 s, it must not hold the process that long).
 */
import { describe, expect, it } from 'vitest';
import { runExitChild } from './exit-child-run.js';
import { DATABASE_URL } from './pg-env.js';
import { useTable } from './rev20b-env.js';

const own = useTable('rev20b_x');
const TABLE = own.table;

const run = (mode: 'end' | 'idle') =>
  runExitChild('./rev20b-exit-child.ts', [DATABASE_URL, TABLE, mode]);

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
