import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { RenewalConnection } from '../src/renewal-connection.js';
import { outcome, startPgrev22Proxy } from './pgrev22-proxy.js';

/**
 * pgrev22: the 'release' listener's next-tick dispatch. The pool (max 3) is at max, every
 * connection in a business transaction; the own opening is silent (blackhole, openMs 3 s);
 * renewals wait in the queue. (1) A business waiter of the pool (pool.connect() pending)
 * and one release: the waiter must get that connection, not a renewal. Then the two other
 * connections released in the same tick: the renewals take them; the pool never grows past
 * its max; no listener is left. (2) A release and pool.end() in the same tick: no renewal is
 * sent to the ended pool, each settles within its limit plus one opening limit, pool.end()
 * resolves.
 */
const STATEMENT_MS = 2_000;

describe("pgrev22: the 'release' listener's dispatch", () => {
  it('a waiter of the pool gets the released connection; then 2 releases in one tick serve 2 renewals; max and listener hold', async () => {
    const proxy = await startPgrev22Proxy();
    const pool = new pg.Pool({ connectionString: proxy.url, max: 3 });
    pool.on('error', () => {});
    const base = pool.listenerCount('release');
    const business = [await pool.connect(), await pool.connect(), await pool.connect()];
    proxy.state.mode = 'blackhole';
    const rc = new RenewalConnection(pool, 3_000, STATEMENT_MS);
    let peak = 0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, pool.totalCount);
    }, 1);
    try {
      const t0 = performance.now();
      const jobs = [1, 2, 3].map((i) =>
        outcome(
          rc.repeatable.query({ text: `SELECT ${i}`, query_timeout: 2_500 } as pg.QueryConfig),
          t0,
        ),
      );
      await sleep(100);
      let waiterGot: pg.PoolClient | undefined;
      const waiter = pool.connect().then((c) => {
        waiterGot = c;
        return c;
      });
      await sleep(20);
      const waitingBefore = pool.waitingCount;
      (business.shift() as pg.PoolClient).release();
      await sleep(100);
      const settledAfterFirst = await Promise.race([
        Promise.all(jobs).then(() => 'all'),
        sleep(1).then(() => 'pending'),
      ]);
      const waiterServed = waiterGot !== undefined;
      // Two in the same tick.
      (business.shift() as pg.PoolClient).release();
      (business.shift() as pg.PoolClient).release();
      const first = await Promise.race([jobs[0], jobs[1], jobs[2]]);
      (await waiter).release();
      const results = await Promise.all(jobs);
      await sleep(20);
      const listeners = pool.listenerCount('release') - base;
      console.log('pgrev22 release waiter', {
        waitingBefore,
        waiterServed,
        settledAfterFirst,
        first,
        results,
        peak,
        listeners,
      });
      expect(waitingBefore).toBe(1);
      expect(waiterServed).toBe(true);
      expect(settledAfterFirst).toBe('pending');
      expect(results.every((r) => r.startsWith('ok'))).toBe(true);
      expect(peak).toBeLessThanOrEqual(3);
      expect(listeners).toBe(0);
    } finally {
      clearInterval(sampler);
      await Promise.race([pool.end(), sleep(2_000)]);
      proxy.close();
    }
  }, 10_000);

  it('a release and, in the same tick after it, a waiter of the pool: the waiter gets it, not the renewal', async () => {
    const proxy = await startPgrev22Proxy();
    const pool = new pg.Pool({ connectionString: proxy.url, max: 2 });
    pool.on('error', () => {});
    const business = [await pool.connect(), await pool.connect()];
    proxy.state.mode = 'blackhole';
    const rc = new RenewalConnection(pool, 3_000, STATEMENT_MS);
    try {
      const t0 = performance.now();
      const job = outcome(
        rc.repeatable.query({ text: 'SELECT 1', query_timeout: 1_000 } as pg.QueryConfig),
        t0,
      );
      await sleep(100);
      (business.shift() as pg.PoolClient).release();
      let waiterAt: number | undefined;
      const waiter = pool.connect().then((c) => {
        waiterAt = performance.now() - t0;
        return c;
      });
      await sleep(200);
      const jobSettledEarly = await Promise.race([job, sleep(1).then(() => 'pending')]);
      (await waiter).release(); // now the renewal may take it
      const result = await job;
      console.log('pgrev22 release same-tick waiter', { waiterAt, jobSettledEarly, result });
      expect(waiterAt).toBeLessThan(150);
      expect(jobSettledEarly).toBe('pending');
      expect(result).toMatch(/^ok/);
    } finally {
      for (const c of business) c.release();
      await Promise.race([pool.end(), sleep(2_000)]);
      proxy.close();
    }
  }, 10_000);

  it('a release and pool.end() in the same tick: nothing sent to the ended pool, every statement settles, pool.end() resolves', async () => {
    const proxy = await startPgrev22Proxy();
    const pool = new pg.Pool({ connectionString: proxy.url, max: 2 });
    pool.on('error', () => {});
    const business = [await pool.connect(), await pool.connect()];
    proxy.state.mode = 'blackhole';
    const rc = new RenewalConnection(pool, 1_000, STATEMENT_MS);
    const sent: number[] = [];
    const query = pool.query.bind(pool) as (...args: unknown[]) => unknown;
    (pool as unknown as { query: (...args: unknown[]) => unknown }).query = (
      ...args: unknown[]
    ) => {
      sent.push(performance.now());
      return query(...args);
    };
    try {
      const t0 = performance.now();
      const jobs = [1, 2, 3].map((i) =>
        outcome(
          rc.repeatable.query({ text: `SELECT ${i}`, query_timeout: 1_500 } as pg.QueryConfig),
          t0,
        ),
      );
      await sleep(100);
      for (const c of business) c.release();
      const ended = pool.end().then(() => Math.round(performance.now() - t0));
      const results = await Promise.all(jobs);
      const endAt = await Promise.race([ended, sleep(3_000).then(() => 'hung')]);
      const times = results.map((r) => Number(r.split(' ').pop()));
      console.log('pgrev22 release end', { results, endAt, sentToPool: sent.length });
      expect(sent.length).toBe(0);
      expect(endAt).not.toBe('hung');
      expect(Math.max(...times)).toBeLessThanOrEqual(1_500 + 1_000 + 100);
    } finally {
      proxy.close();
    }
  }, 10_000);
});
