import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { runStatement } from '../src/pg-call.js';
import { RenewalConnection } from '../src/renewal-connection.js';
import { DATABASE_URL } from './pg-env.js';

/**
 * rcrev5's design point: an opening of the own connection that fails fails the oldest
 * statement that was waiting when it began, never one that came while it ran (that one gets
 * an opening of its own).
 */
describe('rcrev5: an opening that fails', () => {
  /** A pool whose `onConnect` hook fails its first `failures` set-ups after `ms`. */
  function failingPool(failures: number, ms: number) {
    const seen = { openings: 0 };
    const pool = new pg.Pool({
      connectionString: DATABASE_URL,
      max: 1,
      onConnect: async () => {
        seen.openings++;
        if (seen.openings <= failures) {
          await sleep(ms);
          throw new Error(`set-up ${seen.openings} fails`);
        }
      },
    } as pg.PoolConfig);
    return { pool, seen };
  }

  it('a statement that came while an opening begun by use() ran gets an opening of its own', async () => {
    const { pool, seen } = failingPool(1, 300);
    const rc = new RenewalConnection(pool, 2_000, 2_000);
    const done = rc.use(); // the first opening begins now and fails at about 300 ms
    try {
      await sleep(150);
      const t0 = performance.now();
      const { rows } = await runStatement<{ one: number }>(
        rc,
        'select',
        { text: 'SELECT 1 AS one' },
        2_000,
      );
      expect(rows[0]?.one).toBe(1);
      expect(seen.openings).toBe(2);
      expect(performance.now() - t0).toBeLessThan(1_500);
    } finally {
      done();
      await pool.end();
    }
  });

  it('an opening begun for a statement fails that one; one that came during it gets the next opening', async () => {
    const again = failingPool(2, 300);
    const rc2 = new RenewalConnection(again.pool, 2_000, 2_000);
    try {
      const early = runStatement(rc2, 'early', { text: 'SELECT 1 AS one' }, 3_000);
      await sleep(150);
      const late = runStatement(rc2, 'late', { text: 'SELECT 2 AS one' }, 3_000);
      // The first opening began for `early`: its failure fails `early` only. The second began
      // for `late` (waiting by then): it fails `late`. No third attempt for either.
      await expect(early).rejects.toThrow('set-up 1 fails');
      await expect(late).rejects.toThrow('set-up 2 fails');
      expect(again.seen.openings).toBe(2);
    } finally {
      await again.pool.end();
    }
  });
});
