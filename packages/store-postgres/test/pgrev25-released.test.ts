import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { RenewalConnection } from '../src/renewal-connection.js';
import { DATABASE_URL } from './pg-env.js';
import { outcome, startPgrev22Proxy } from './pgrev22-proxy.js';
import { localPortOf } from './rcrev2-proxy.js';

/**
 * pgrev25: `releasedAlive` (d5d0b77). A connection given back "without an error" lets the next
 * dispatch send one statement sent again to the pool, on the assumption that pool.query() gets
 * that very connection (the idle list is a stack). But pg-pool removes a connection given back
 * without an error when it reached `maxUses`, expired (`maxLifetimeSeconds`) or is no longer
 * queryable (its backend ended): the 'release' event fires all the same, before the removal.
 * Then the statement sent again goes to whatever idle connection is on top of the stack: a flow
 * a NAT dropped, the very thing "sent again" avoids.
 *
 * Set-up: pool max 3 behind the pgrev22 proxy; two idle connections whose flows are frozen
 * (dead), the third held by a business transaction. The own connection opens, but slowly:
 * its opening (begun when the statement is sent again, ~500 ms) takes 450 ms more. A renewal
 * (limit 1.5 s) first goes to a frozen idle connection, is sent again at ~500 ms; the business
 * transaction gives its connection back at 650 ms. The own connection opens at ~950 ms.
 */
const STATEMENT_MS = 2_000;
const OWN_DELAY_MS = 450;

async function scenario(how: 'alive' | 'maxUses' | 'killed') {
  const proxy = await startPgrev22Proxy();
  const pool = new pg.Pool({
    connectionString: proxy.url,
    max: 3,
    ...(how === 'maxUses' ? { maxUses: 2 } : {}),
  });
  pool.on('error', () => {});
  const admin = new pg.Client({ connectionString: DATABASE_URL });
  await admin.connect();
  // c1 used once and taken again by the business transaction (its next release is its 2nd).
  const c1 = await pool.connect();
  const c2 = await pool.connect();
  const c3 = await pool.connect();
  for (const c of [c1, c2, c3]) c.on('error', () => {});
  c1.release();
  const business = await pool.connect(); // pops c1
  const businessPid = (business as unknown as { processID: number }).processID;
  c2.release();
  c3.release();
  proxy.freeze(localPortOf(c2));
  proxy.freeze(localPortOf(c3));
  const rc = new RenewalConnection(pool, 3_000, STATEMENT_MS);
  const inner = rc as unknown as { connect: () => Promise<pg.Client> };
  const original = inner.connect.bind(rc);
  inner.connect = async () => {
    await sleep(OWN_DELAY_MS);
    return original();
  };
  const sentToPool: number[] = [];
  const query = pool.query.bind(pool) as (...a: unknown[]) => unknown;
  (pool as unknown as { query: (...a: unknown[]) => unknown }).query = (...a: unknown[]) => {
    sentToPool.push(Math.round(performance.now() - t0));
    return query(...a);
  };
  const t0 = performance.now();
  try {
    const j = outcome(
      rc.repeatable.query({ text: 'SELECT 1', query_timeout: 1_500 } as pg.QueryConfig),
      t0,
    );
    await sleep(650);
    if (how === 'killed') {
      // The backend of the business transaction ended (an admin, a failover, the store's own
      // termination at the maximum hold); the application gives the client back without an
      // error (it handled the failure itself).
      await admin.query('SELECT pg_terminate_backend($1)', [businessPid]);
      for (let i = 0; i < 50 && (business as unknown as { _queryable: boolean })._queryable; i++)
        await sleep(10);
    }
    const idleBefore = pool.idleCount;
    business.release();
    await sleep(5);
    const idleAfter = pool.idleCount;
    const result = await j;
    return { result, idleBefore, idleAfter, sentToPool, total: pool.totalCount };
  } finally {
    await Promise.race([pool.end(), sleep(2_000)]);
    await admin.end().catch(() => {});
    proxy.close();
  }
}

describe('pgrev25: a statement sent again and a connection given back', () => {
  it('control: the connection given back alive takes it (answered at the release)', async () => {
    const r = await scenario('alive');
    console.log('pgrev25 released alive', r);
    expect(r.result).toMatch(/^ok /);
    expect(Number(r.result.split(' ')[1])).toBeLessThan(900);
    // Taken at the release (the frozen idle connection would have left it to its limit, 1.5 s;
    // the idle count is not compared: under load the released connection may be idle again by
    // the time it is read).
    expect(r.sentToPool.length).toBe(2);
  }, 10_000);

  // Was FINDING (MEDIUM), fixed: a statement sent again goes to the pool only while the released connection is the one pg-pool hands out next (top of its idle list): a connection given back without an error but removed by pg-pool (it
  // reached maxUses) still sets releasedAlive; the statement sent again goes to the top idle
  // connection, a frozen flow, at the release (sentToPool [0, ~655]) and fails at its limit
  // ('Query read timeout' at ~1500 ms) although the own connection opened at ~950 ms (it would
  // have been answered then, as the control shows for the alive case at ~655 ms). The idle count
  // goes 1 -> 0 across the release: the frozen idle connection was taken. Fix: in
  // onRelease remember the client; in dispatch send a statement sent again to the pool only if
  // that client is the one pool.connect() will hand out (e.g. `_idle.at(-1)?.client === it`,
  // or: not `err`, not `pool.ending`, `client._queryable && !client._ending`,
  // `(client._poolUseCount ?? 0) < maxUses` (counted before the event), not expired), and
  // clear the mark on any other release/connect in the same tick.
  it('a connection removed at maxUses after a plain release: the statement sent again is answered', async () => {
    const r = await scenario('maxUses');
    console.log('pgrev25 released maxUses', r);
    expect(r.result).toMatch(/^ok /);
    expect(Number(r.result.split(' ')[1])).toBeLessThan(1_200);
  }, 10_000);

  // Was FINDING (MEDIUM), fixed: a statement sent again goes to the pool only while the released connection is the one pg-pool hands out next (top of its idle list): the same with a connection whose backend ended (pg_terminate_backend)
  // and that the application gives back with a plain release(): pg-pool removes it
  // (`!client._queryable`), the statement sent again lands on the frozen idle connection and
  // fails at its limit (~1500 ms) instead of being answered by the own connection at ~950 ms.
  it('a dead connection given back with a plain release: the statement sent again is answered', async () => {
    const r = await scenario('killed');
    console.log('pgrev25 released killed', r);
    expect(r.result).toMatch(/^ok /);
    expect(Number(r.result.split(' ')[1])).toBeLessThan(1_200);
  }, 10_000);
});
