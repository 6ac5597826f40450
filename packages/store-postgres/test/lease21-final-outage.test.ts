/**
 * lease21: final writes on the renewal route through an outage, on a PostgreSQL this file
 * owns (frozen by SIGSTOP). The pool (2 connections) is held by the app's business
 * transactions, so every completion takes the route; the server freezes while completions are
 * on their way there: they fail by their limit, core retries them, the own connection that
 * went silent is replaced, and once the server answers again every completion lands while
 * the renewals (on the same route, ahead of them) keep every lease. Nothing runs twice.
 */
import { createIdempotency } from '@idem/core';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type PostgresServer, startPostgres } from '../../../apps/chaos/src/postgres-server.js';
import { createPostgresStore, recommendedPoolConfig } from '../src/index.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const LIMIT = 500;

let server: PostgresServer;
const pools: pg.Pool[] = [];

beforeAll(async () => {
  server = await startPostgres();
  const pool = makePool(2, LIMIT);
  await createPostgresStore({ pool }).ensureSchema();
}, 60_000);
afterAll(async () => {
  for (const pool of pools) await pool.end().catch(() => {});
  await server?.close();
});

function makePool(max: number, statementMs: number): pg.Pool {
  const pool = new pg.Pool({
    connectionString: server.url,
    ...recommendedPoolConfig({ statementTimeoutMs: statementMs }),
    max,
  });
  pool.on('error', () => {});
  pools.push(pool);
  return pool;
}

it('held: a frozen server while completions wait on the renewal route (pool held by the app): all land after the thaw, leases kept, each operation once', async () => {
  // The app's statements may take 6 s; the store's are limited to 500 ms.
  const pool = makePool(2, 6_000);
  const store = createPostgresStore({
    pool,
    keyPrefix: `l21o${Date.now()}`,
    statementTimeoutMs: LIMIT,
  });
  const idem = createIdempotency<string>({
    store,
    leaseMs: 4_000,
    heartbeatMs: 1_000,
    storeTimeoutMs: 1_200,
    completionWaitMs: 1_200,
  });
  const scope = ['t', 'POST /l21'];
  const runs = new Map<string, number>();
  let aborted = 0;
  const keys = Array.from({ length: 6 }, (_, i) => `o${i}-${Date.now()}`);
  // The app holds both pool connections in business transactions for 3.5 s.
  let release!: () => void;
  const appDone = new Promise<void>((resolve) => (release = resolve));
  const started = keys.map(async (key) =>
    idem
      .execute({ key, scope }, async ({ signal }) => {
        runs.set(key, (runs.get(key) ?? 0) + 1);
        signal.addEventListener('abort', () => aborted++);
        await appDone;
        return `v-${key}`;
      })
      .catch((error: unknown) => error),
  );
  await sleep(300);
  const held = await Promise.all([pool.connect(), pool.connect()]);
  const app = held.map(async (client) => {
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_sleep(3.5)');
      await client.query('COMMIT');
    } finally {
      client.release();
    }
  });
  // The operations finish while the pool is held: their completions take the route.
  await sleep(200);
  expect(pool.waitingCount + pool.idleCount).toBe(0);
  release();
  await sleep(50);
  server.freeze();
  await sleep(1_500);
  server.thaw();
  const results = await Promise.all(started);
  await Promise.all(app);
  // Answered: the value, or STORE_UNAVAILABLE while the retries went on (the freeze outlasted
  // the completion wait). Either way the outcome lands after the thaw:
  const replays = new Map<string, unknown>();
  const until = performance.now() + 15_000;
  for (const key of keys) {
    while (performance.now() < until) {
      const r = await idem
        .execute({ key, scope }, async () => {
          runs.set(key, (runs.get(key) ?? 0) + 1);
          return 'again';
        })
        .catch((error: unknown) => error);
      if (!(r instanceof Error)) {
        replays.set(key, r);
        break;
      }
      await sleep(200);
    }
  }
  console.log(
    `[lease21 pg] freeze: ${results.filter((r) => r instanceof Error).length} of ${keys.length} answered an error first`,
  );
  for (const key of keys) expect(replays.get(key)).toEqual({ value: `v-${key}`, replayed: true });
  expect([...runs.values()]).toEqual(keys.map(() => 1));
  expect(aborted).toBe(0);
  expect(await idem.drain(5_000)).toBe(0);
}, 60_000);
