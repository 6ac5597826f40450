/**
 * lease21: the plain store's final writes (`complete`, `release`) when the pool would queue
 * them. Before, they waited in the pool's queue behind the app's statements (and, after an
 * outage, behind the acquisitions that piled up) until their time limit, at every retry,
 * while the renewals (off the queue since rev20) kept the lease: the caller got
 * STORE_UNAVAILABLE for an operation that had succeeded, and the key stayed in progress until
 * the completion got through, or the maximum hold passed and the operation ran again. They
 * now take the renewal route when the pool has no connection to hand out at once, behind
 * the renewals waiting there.
 */
import { createIdempotency, StoreUnavailableError } from '@idem/core';
import type pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createPostgresStore } from '../src/index.js';
import { RenewalConnection } from '../src/renewal-connection.js';
import { makePool, randomName, sleep } from './pg-env.js';

const table = inject('pgTable');
const raw = makePool({ max: 2 });
const pools: pg.Pool[] = [];
afterAll(async () => {
  for (const pool of pools) await pool.end().catch(() => {});
  await raw.end();
});

const LIMIT = 500;

function setUp(application_name = 'idem-store-postgres-test') {
  // The app's statements may take 5 s (the store's own are limited to LIMIT).
  const pool = makePool({
    max: 2,
    application_name,
    statement_timeout: 5_000,
    query_timeout: 5_000,
    connectionTimeoutMillis: 5_000,
  } as pg.PoolConfig);
  pools.push(pool);
  const prefix = randomName('l21f');
  const store = createPostgresStore({ pool, table, keyPrefix: prefix, statementTimeoutMs: LIMIT });
  const idem = createIdempotency<string>({
    store,
    leaseMs: 3_000,
    heartbeatMs: 1_000,
    storeTimeoutMs: 1_200,
    completionWaitMs: 1_200,
  });
  return { pool, prefix, idem };
}

/** Every connection of `pool` busy for `ms` and one more statement waiting for one. */
async function saturate(pool: pg.Pool, ms: number): Promise<{ ends: Promise<unknown> }> {
  const held = await Promise.all([pool.connect(), pool.connect()]);
  const busy = held.map((client) =>
    client.query('SELECT pg_sleep($1)', [ms / 1000]).finally(() => client.release()),
  );
  const queued = pool.query('SELECT 1');
  expect(pool.waitingCount).toBe(1);
  return { ends: Promise.all([...busy, queued]) };
}

/** The record's status read through another pool (not the adapter). */
async function statusOf(prefix: string): Promise<string[]> {
  const { rows } = await raw.query(
    `SELECT status FROM ${table} WHERE key LIKE $1 || '%' ORDER BY key`,
    [prefix],
  );
  return rows.map((r) => r.status as string);
}

describe('lease21: final writes of the plain store when the pool would queue them', () => {
  it('a completion while every pool connection is busy and statements wait: it lands at once, the caller gets the value', async () => {
    const { pool, prefix, idem } = setUp();
    let saturated: { ends: Promise<unknown> } | undefined;
    const t0 = performance.now();
    const result = await idem
      .execute({ key: 'k', scope: 'global' }, async () => {
        // The operation's own work takes the pool (2 s, longer than the statement limit).
        saturated = await saturate(pool, 1_800);
        return 'v';
      })
      .catch((error: unknown) => error);
    const ms = performance.now() - t0;
    // Recorded while the pool is still saturated (read through another pool).
    const during = await statusOf(prefix);
    await saturated?.ends;
    expect(result).not.toBeInstanceOf(StoreUnavailableError);
    expect(result).toEqual({ value: 'v', replayed: false });
    expect(during).toEqual(['completed']);
    // (Not a timing bound: through the pool's queue it could not land before the pool freed
    // up, 1.8 s in; the completion wait is 1.2 s.)
    expect(ms).toBeLessThan(1_800);
  }, 20_000);

  it('a release (the operation failed) while the pool is saturated: the key is free at once, not held for the lease', async () => {
    const { pool, prefix, idem } = setUp();
    let saturated: { ends: Promise<unknown> } | undefined;
    const failed = await idem
      .execute({ key: 'k', scope: 'global' }, async () => {
        saturated = await saturate(pool, 1_800);
        throw new Error('the operation failed');
      })
      .catch((error: unknown) => error);
    const during = await statusOf(prefix);
    await saturated?.ends;
    expect((failed as Error).message).toBe('the operation failed');
    expect(during).toEqual(['released']);
  }, 20_000);

  it('held: with a connection free the final write goes through the pool, as before (the own connection is never opened)', async () => {
    const app = randomName('l21app');
    const { pool, prefix, idem } = setUp(app);
    const result = await idem.execute({ key: 'k', scope: 'global' }, async () => 'v');
    expect(result).toEqual({ value: 'v', replayed: false });
    expect(await statusOf(prefix)).toEqual(['completed']);
    const { rows } = await raw.query(
      'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
      [app],
    );
    // The pool's connections only: none of the store's own.
    expect(rows[0].n).toBe(pool.totalCount);
    expect(pool.totalCount).toBe(1);
  }, 20_000);

  it('a deferred statement (a final write) waits behind the renewals queued on the route', async () => {
    const pool = makePool({ max: 1 });
    pools.push(pool);
    const route = new RenewalConnection(pool, 2_000, 2_000);
    // The only pool connection busy: everything waits for the own connection (opening).
    const busy = await pool.connect();
    const order: string[] = [];
    const send = (via: { query: RenewalConnection['query'] }, name: string) =>
      via
        .query({
          text: `SELECT '${name}'::text AS n, pg_sleep(0.05)`,
          query_timeout: 2_000,
        } as pg.QueryConfig)
        .then(() => order.push(name));
    const sent = [
      send(route.deferred, 'final1'),
      send(route.repeatable, 'renewal1'),
      send(route.deferred, 'final2'),
      send(route, 'termination'),
      send(route.repeatable, 'renewal2'),
    ];
    await Promise.all(sent);
    busy.release();
    await sleep(10);
    // The own connection sends one at a time, in queue order (a pool connection may take one
    // when it comes back: none here).
    expect(order).toEqual(['renewal1', 'termination', 'renewal2', 'final1', 'final2']);
  }, 20_000);
});
