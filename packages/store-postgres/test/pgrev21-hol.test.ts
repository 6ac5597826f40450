import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { RenewalConnection } from '../src/renewal-connection.js';
import { ownSetUpStalls } from './pgrev21-proxy.js';
import { localPortOf } from './rcrev2-proxy.js';
import { startRcrev3Proxy } from './rcrev3-proxy.js';

/**
 * pgrev21: head-of-line blocking behind a statement sent again while the own connection's
 * opening stalls. A renewal J1 goes to an idle pool connection whose flow is frozen (a NAT
 * dropped it); after a third of its limit it is sent again and waits, first in the queue, for
 * the own connection, whose opening stalls (its set-up hangs until `openMs`). A later renewal
 * J2 finds the pool's other connection idle: is it sent there at once?
 */
const STATEMENT_MS = 2_000;

describe('pgrev21: a statement sent again at the head of the queue', () => {
  // FIXED (was FINDING MEDIUM): a renewal sent again (waiting for the own connection, whose opening stalls) at the head of the queue holds back every later renewal although an idle pool connection is free: J2 expires unsent (NotSentError) ~400 ms past its limit, the pool idle the whole time.
  it('a later renewal goes to the idle pool connection at once, not behind the one sent again', async () => {
    const proxy = await startRcrev3Proxy();
    const pool = new pg.Pool({
      connectionString: proxy.url,
      max: 2,
      onConnect: ownSetUpStalls(STATEMENT_MS),
    } as unknown as pg.PoolConfig);
    pool.on('error', () => {});
    try {
      const a = await pool.connect();
      const b = await pool.connect();
      b.release();
      a.release(); // a is idle last: pool.query takes it first
      proxy.freeze(localPortOf(a));
      const rc = new RenewalConnection(pool, 1_500, STATEMENT_MS);
      const t0 = performance.now();
      const j1 = rc.repeatable
        .query({ text: 'SELECT 1', query_timeout: 1_500 } as pg.QueryConfig)
        .then(
          () => `ok ${Math.round(performance.now() - t0)}`,
          (e: unknown) => `${(e as Error).name} ${Math.round(performance.now() - t0)}`,
        );
      await sleep(600); // J1 sent again at ~500 ms: it waits for the own opening
      const idleWhenJ2 = pool.idleCount;
      const t2 = performance.now();
      const j2 = await rc.repeatable
        .query({ text: 'SELECT 2', query_timeout: 1_000 } as pg.QueryConfig)
        .then(
          () => `ok ${Math.round(performance.now() - t2)}`,
          (e: unknown) => `${(e as Error).name} ${Math.round(performance.now() - t2)}`,
        );
      console.log('pgrev21 hol', { j1: await j1, j2, idleWhenJ2 });
      expect(idleWhenJ2).toBe(1);
      expect(j2).toMatch(/^ok/);
    } finally {
      await Promise.race([pool.end(), sleep(3_000)]);
      proxy.close();
    }
  });
});
