import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { RenewalConnection } from '../src/renewal-connection.js';
import { outcome, startPgrev22Proxy } from './pgrev22-proxy.js';
import { localPortOf } from './rcrev2-proxy.js';

/**
 * pgrev22: the pool at its max.
 * (1) Back-off: new connections refused for 700 ms while the pool is at max (every connection
 *     in a business transaction) and renewals keep arriving (every 50 ms): the failed
 *     openings build the back-off; once the server accepts again, is the next renewal served
 *     at once (no route withheld by the back-off)?
 * (2) A statement sent again (its pool flow dead) waits for the own connection, whose opening
 *     stalls; the pool is at max, so nothing grows. A business transaction ends: its
 *     connection (just used, alive) is back in the pool. Does the waiting renewal take it?
 * (3) pool.end() while a connection grown for a statement sent again is still connecting (a
 *     silent server, a pool without connectionTimeoutMillis).
 */
const STATEMENT_MS = 2_000;

describe('pgrev22: the pool at its max', () => {
  it('after refused openings (back-off active), the next renewal opens at once when the server accepts again', async () => {
    const proxy = await startPgrev22Proxy();
    const pool = new pg.Pool({ connectionString: proxy.url, max: 2 });
    pool.on('error', () => {});
    const business = [await pool.connect(), await pool.connect()];
    const rc = new RenewalConnection(pool, 1_000, STATEMENT_MS);
    proxy.state.mode = 'reset';
    const done = rc.use(); // fails: back-off begins
    try {
      const during: Promise<string>[] = [];
      const t0 = performance.now();
      while (performance.now() - t0 < 700) {
        const d = rc.use(); // executions beginning during the back-off
        during.push(
          outcome(
            rc.repeatable.query({ text: 'SELECT 1', query_timeout: 500 } as pg.QueryConfig),
            t0,
          ),
        );
        d();
        await sleep(50);
      }
      const failedDuring = (await Promise.all(during)).filter((r) => !r.startsWith('ok')).length;
      proxy.state.mode = 'pass';
      const t1 = performance.now();
      const next = await outcome(
        rc.repeatable.query({ text: 'SELECT 1', query_timeout: 500 } as pg.QueryConfig),
        t1,
      );
      console.log('pgrev22 atmax back-off', {
        during: during.length,
        failedDuring,
        next,
        attempts: proxy.state.accepted - 2,
      });
      expect(failedDuring).toBe(during.length);
      expect(next).toMatch(/^ok/);
      // Since pgrev22-storm's fix an opening on demand comes at most ON_DEMAND_GAP_MS (150 ms)
      // after the last failed one (not after the executions' back-off, which reached 800 ms
      // here): within that gap and an opening, not "at once".
      expect(Number(next.split(' ')[1])).toBeLessThan(150 + 250);
    } finally {
      done();
      for (const c of business) c.release();
      await Promise.race([pool.end(), sleep(2_000)]);
      proxy.close();
    }
  }, 10_000);

  // Was FINDING (LOW), fixed (a connection given back without an error may take one statement sent again: releasedAlive; answered at 703 ms after): a statement sent again never took a connection back in the pool (only the own one or a grown one): with the pool at max and the own opening stalled, a business transaction's connection released at 700 ms stays idle while the renewal waits and fails at its limit (1.5 s).
  it('a statement sent again takes a connection a business transaction gave back', async () => {
    const proxy = await startPgrev22Proxy();
    const pool = new pg.Pool({ connectionString: proxy.url, max: 2 });
    pool.on('error', () => {});
    const business = await pool.connect();
    const a = await pool.connect();
    a.on('error', () => {});
    a.release();
    proxy.freeze(localPortOf(a));
    proxy.state.mode = 'blackhole'; // the own opening stalls (openMs 3 s)
    const rc = new RenewalConnection(pool, 3_000, STATEMENT_MS);
    try {
      const t0 = performance.now();
      const j = outcome(
        rc.repeatable.query({ text: 'SELECT 1', query_timeout: 1_500 } as pg.QueryConfig),
        t0,
      );
      await sleep(700); // sent again at ~500 ms
      business.release(); // alive, back in the pool
      await sleep(20);
      const idleAfterRelease = pool.idleCount;
      const result = await j;
      console.log('pgrev22 atmax again', { idleAfterRelease, result, idleAtEnd: pool.idleCount });
      // Answered on the connection given back (the frozen idle one would leave it to its
      // limit, 1.5 s): within a moment of the release at 700 ms.
      expect(result).toMatch(/^ok/);
      expect(Number(result.split(' ')[1])).toBeLessThan(1_000);
    } finally {
      await Promise.race([pool.end(), sleep(2_000)]);
      proxy.close();
    }
  }, 10_000);

  // Was FINDING (LOW), fixed (without the pool's connectionTimeoutMillis a connection grown for the store is given up after openMs: RenewalConnection.bound): a connection grown for a statement sent again that never connects (silent server, pool without connectionTimeoutMillis) keeps pool.end() from resolving: the store made a connection attempt the application never asked for, and the application's shutdown waits for it forever.
  it('pool.end() resolves while a grown connection is still connecting', async () => {
    const proxy = await startPgrev22Proxy();
    const pool = new pg.Pool({ connectionString: proxy.url, max: 3 });
    pool.on('error', () => {});
    const a = await pool.connect();
    a.on('error', () => {});
    a.release();
    proxy.freeze(localPortOf(a));
    proxy.state.mode = 'blackhole';
    const rc = new RenewalConnection(pool, 1_000, STATEMENT_MS);
    try {
      const t0 = performance.now();
      const j = await outcome(
        rc.repeatable.query({ text: 'SELECT 1', query_timeout: 1_500 } as pg.QueryConfig),
        t0,
      );
      const connecting = pool.totalCount;
      const ended = await Promise.race([
        pool.end().then(() => 'ended'),
        sleep(3_000).then(() => 'hung'),
      ]);
      console.log('pgrev22 atmax end', { j, connecting, ended, total: pool.totalCount });
      expect(ended).toBe('ended');
    } finally {
      proxy.close(); // the silent flows end: the grown connect fails, pool.end() completes
    }
  }, 10_000);
});
