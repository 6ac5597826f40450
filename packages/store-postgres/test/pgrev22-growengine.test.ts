import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { randomName } from './pg-env.js';
import { ownSetUpStalls } from './pgrev21-proxy.js';
import { startPgrev22Proxy } from './pgrev22-proxy.js';
import { localPortOf } from './rcrev2-proxy.js';

/**
 * pgrev22-growidle through the engine. One owner (lease 1.5 s, heartbeats every 250 ms,
 * statement limit 2 s); the own connection's set-up stalls (its renewals go to the pool).
 * 0.7 s in, a NAT drops every IDLE flow of the pool (the owner's business connection stays
 * fine; the pool, max 6, may open new ones at any time). A renewal on a dead idle connection
 * is sent again after ~667 ms "on a pool connection that just opened"; the engine renews one
 * at a time, so a second send that hangs until the limit (2 s) outlives the lease.
 */
const table = inject('pgTable');
const STATEMENT_MS = 2_000;

async function scenario(idle: number, stallsEvery: boolean) {
  const proxy = await startPgrev22Proxy();
  // Every opening of the own connection stalls, or only the first (a lost SYN, a slow set-up:
  // another attempt opens).
  let openings = 0;
  const pool = new pg.Pool({
    connectionString: proxy.url,
    max: 6,
    onConnect: ownSetUpStalls(STATEMENT_MS, () => stallsEvery || openings++ === 0),
  } as unknown as pg.PoolConfig);
  pool.on('error', () => {});
  let aborted: number | undefined;
  let frozeAt = 0;
  try {
    const store = createPostgresStore({
      pool,
      table,
      keyPrefix: randomName('p22ge'),
      statementTimeoutMs: STATEMENT_MS,
    });
    const engine = createPostgresIdempotency<string>({ store, leaseMs: 1_500, heartbeatMs: 250 });
    // `idle` idle connections besides the owner's business one.
    const warm = [];
    for (let i = 0; i <= idle; i++) warm.push(await pool.connect());
    for (const c of warm) {
      c.on('error', () => {});
      c.release();
    }
    const run = engine
      .execute({ key: 'k', scope: randomName('scope') }, async ({ signal }) => {
        signal.addEventListener('abort', () => {
          aborted ??= performance.now() - frozeAt;
        });
        const until = performance.now() + 4_500;
        while (performance.now() < until) {
          signal.throwIfAborted();
          await sleep(50);
        }
        return 'done';
      })
      .then(
        (r) => `ok ${r.value}`,
        (e: unknown) => (e as Error).name,
      );
    await sleep(700);
    const idleNow = (pool as unknown as { _idle: { client: pg.PoolClient }[] })._idle;
    const dead = idleNow.length;
    for (const item of idleNow) proxy.freeze(localPortOf(item.client));
    frozeAt = performance.now();
    const result = await run;
    return { result, dead, abortedAfterFreezeMs: aborted && Math.round(aborted) };
  } finally {
    await Promise.race([pool.end(), sleep(3_000)]);
    proxy.close();
  }
}

describe('pgrev22: dead idle flows and an own opening that stalls, through the engine', () => {
  it('control: one dead idle connection: a new one is grown, the owner is not aborted', async () => {
    const r = await scenario(1, true);
    console.log('pgrev22 growengine control', r);
    expect(r.dead).toBe(1);
    expect(r.result).toBe('ok done');
  }, 15_000);

  // Was FINDING (MEDIUM): every idle pool connection dead (a NAT dropped them) AND the own opening stalling: the renewal sent again had no route known alive (a1fb1a0 grew it onto another dead idle connection; after 6448290 it waited for the stalled own opening), hung to its 2 s limit, the lease (1.5 s) lapsed and the healthy owner was aborted. Fixed: a second opening of the own connection while the first stalls and a statement has no other route (RenewalConnection.hedge).
  it('three dead idle connections, the own opening stalls once: the healthy owner is not aborted', async () => {
    const r = await scenario(3, false);
    console.log('pgrev22 growengine', r);
    expect(r.dead).toBe(3);
    expect(r.result).toBe('ok done');
  }, 15_000);

  // Was left open (LOW, lease21, README "Known gaps"): every opening of the own connection
  // stalls while new pool connections open at once, and every idle pool connection is dead: the
  // renewal sent again had no route known alive (the pool hands out its idle connections before
  // it opens one; checking them all out and back would fire the pool's acquire/release events
  // for the application's listeners and count toward `maxUses`). Fixed: a statement sent again
  // while the pool has idle connections (its first send on one went unanswered) gets a new pool
  // connection past them at once, opened and set up by pg-pool itself (`newClient`, the step
  // `connect()` takes when it has no idle one), no idle one checked out
  // (RenewalConnection.growPastIdle).
  it('three dead idle connections, every own opening stalls: the owner is not aborted', async () => {
    const r = await scenario(3, true);
    console.log('pgrev22 growengine every', r);
    expect(r.dead).toBe(3);
    expect(r.result).toBe('ok done');
  }, 15_000);
});
