/**
 * rev20 outages of the plain store (core's engine, `createPostgresStore`) on a PostgreSQL this
 * file owns: a server frozen (SIGSTOP of every process) mid-acquire, mid-operation and
 * mid-completion with more executions than pool slots; operations that use the same pool for
 * their business writes while the server is slow; a kill -9 and restart within the lease.
 */
import { createIdempotency, type IdemError, StoreUnavailableError } from '@idem/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresServer, startPostgres } from '../../../apps/chaos/src/postgres-server.js';
import { createPostgresStore, type PostgresStore, recommendedPoolConfig } from '../src/index.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const LIMIT = 500;

let server: PostgresServer;
const pools: pg.Pool[] = [];

beforeAll(async () => {
  server = await startPostgres();
  const pool = makePool(2);
  await createPostgresStore({ pool }).ensureSchema();
  await pool.query('CREATE TABLE IF NOT EXISTS business (k text PRIMARY KEY, at timestamptz)');
}, 60_000);
afterAll(async () => {
  for (const pool of pools) await pool.end().catch(() => {});
  await server?.close();
});

function makePool(max: number): pg.Pool {
  const pool = new pg.Pool({
    connectionString: server.url,
    ...recommendedPoolConfig({ statementTimeoutMs: LIMIT }),
    max,
  });
  pool.on('error', () => {});
  pools.push(pool);
  return pool;
}

function engineOn(store: PostgresStore) {
  return createIdempotency<string>({
    store,
    leaseMs: 3_000,
    heartbeatMs: 1_000,
    storeTimeoutMs: 1_200,
    completionWaitMs: 1_200,
  });
}

describe('rev20 PostgreSQL (plain store): pool slots and a slow or frozen server', () => {
  it("operations that hold every connection of the store's own pool for longer than a lease: their leases are kept, nothing runs twice", async () => {
    // One pool for the store and the operations, as the README's example has it. Through the
    // pool's queue the renewals waited behind the business transactions: both healthy owners
    // lost their leases and both operations ran again after their writes committed. They now
    // go to a connection of the store's own when no pool connection is free.
    const pool = makePool(2);
    const store = createPostgresStore({
      pool,
      keyPrefix: `hold${Date.now()}`,
      statementTimeoutMs: LIMIT,
    });
    const idem = engineOn(store);
    const scope = ['t', 'POST /hold'];
    const running = new Map<string, number>();
    const runs = new Map<string, number>();
    let overlaps = 0;
    let aborted = 0;
    const op =
      (key: string) =>
      async ({ signal }: { signal: AbortSignal }) => {
        running.set(key, (running.get(key) ?? 0) + 1);
        runs.set(key, (runs.get(key) ?? 0) + 1);
        if ((running.get(key) ?? 0) > 1) overlaps++;
        // A business transaction on the same pool, 4 s long (a slow server, a slow handler):
        // longer than the 3 s lease, renewed every second by the heartbeat.
        const client = await pool.connect();
        try {
          await client.query('BEGIN');
          for (let i = 0; i < 16; i++) await client.query('SELECT pg_sleep(0.25)');
          await client.query(
            'INSERT INTO business (k, at) VALUES ($1, now()) ON CONFLICT (k) DO NOTHING',
            [key],
          );
          await client.query('COMMIT');
        } finally {
          client.release();
          running.set(key, (running.get(key) ?? 1) - 1);
          if (signal.aborted) aborted++;
        }
        return key;
      };
    const keys = [`a${Date.now()}`, `b${Date.now()}`];
    const firsts = keys.map((key) =>
      idem.execute({ key, scope }, op(key)).catch((e: unknown) => e),
    );
    // A client that retries every 300 ms (its first call timed out on its side).
    const dupes: Promise<unknown>[] = [];
    for (let i = 0; i < 14; i++) {
      await sleep(300);
      for (const key of keys)
        dupes.push(idem.execute({ key, scope }, op(key)).catch((e: unknown) => e));
    }
    const results = await Promise.all([...firsts, ...dupes]);
    const codes = results.map((r) => (r instanceof Error ? (r as IdemError).code : 'ok'));
    console.log(
      `[rev20 pg] hold: overlaps ${overlaps}, aborted ${aborted}, answers ${[...new Set(codes)].join(',')}`,
    );
    expect(aborted, 'a healthy owner lost its lease for want of a pool connection').toBe(0);
    expect(overlaps, 'a duplicate ran beside its healthy owner').toBe(0);
    expect([...runs.values()], 'each operation ran once').toEqual([1, 1]);
    expect(await idem.drain(5_000)).toBe(0);
  }, 40_000);

  it('more executions than pool slots on a slow server (frozen 150 ms of every 250 ms): healthy owners keep their leases', async () => {
    const pool = makePool(3);
    const store = createPostgresStore({
      pool,
      keyPrefix: `slow${Date.now()}`,
      statementTimeoutMs: LIMIT,
    });
    const idem = engineOn(store);
    const scope = ['t', 'POST /slow'];
    const running = new Map<string, number>();
    let overlaps = 0;
    let aborted = 0;
    let starts = 0;
    const op =
      (key: string) =>
      async ({ signal }: { signal: AbortSignal }) => {
        starts++;
        running.set(key, (running.get(key) ?? 0) + 1);
        if ((running.get(key) ?? 0) > 1) overlaps++;
        await sleep(4_000);
        running.set(key, (running.get(key) ?? 1) - 1);
        if (signal.aborted) aborted++;
        return key;
      };
    const keys = Array.from({ length: 12 }, (_, i) => `s${i}-${Date.now()}`);
    const calls = keys.map((key) => idem.execute({ key, scope }, op(key)).catch((e: unknown) => e));
    await sleep(300);
    let slow = true;
    const cycling = (async () => {
      for (let i = 0; i < 40 && slow; i++) {
        server.freeze();
        await sleep(150);
        server.thaw();
        await sleep(100);
      }
    })();
    try {
      for (let i = 0; i < 14; i++) {
        await sleep(300);
        for (const key of keys)
          calls.push(idem.execute({ key, scope }, op(key)).catch((e: unknown) => e));
      }
    } finally {
      slow = false;
      await cycling;
      server.thaw();
    }
    const results = await Promise.all(calls);
    const codes = results.map((r) => (r instanceof Error ? (r as IdemError).code : 'ok'));
    console.log(
      `[rev20 pg] slow: starts ${starts}, overlaps ${overlaps}, aborted ${aborted}, answers ${[...new Set(codes)].join(',')}`,
    );
    expect(aborted).toBe(0);
    expect(overlaps).toBe(0);
    expect(await idem.drain(8_000)).toBe(0);
  }, 50_000);

  it('frozen 2.5 s (SIGSTOP) under 24 executions on 4 slots: bounded, the pool recovers by itself, each key runs once, all replay', async () => {
    const pool = makePool(4);
    const store = createPostgresStore({
      pool,
      keyPrefix: `frz${Date.now()}`,
      statementTimeoutMs: LIMIT,
    });
    // The outage (about 2.4 s) ends well inside the 6 s lease: the completion and the renewals
    // must land before any retry could take the key over.
    const idem = createIdempotency<string>({
      store,
      leaseMs: 6_000,
      heartbeatMs: 1_000,
      storeTimeoutMs: 1_200,
      completionWaitMs: 1_200,
    });
    const scope = ['t', 'POST /freeze'];
    const runs = new Map<string, number>();
    const op = (key: string) => async () => {
      runs.set(key, (runs.get(key) ?? 0) + 1);
      await sleep(800);
      return `v-${key}`;
    };
    const keys = Array.from({ length: 24 }, (_, i) => `f${i}-${Date.now()}`);
    const timed = (key: string) => {
      const t0 = performance.now();
      return idem.execute({ key, scope }, op(key)).then(
        () => ({ ms: performance.now() - t0, error: undefined as unknown }),
        (error: unknown) => ({ ms: performance.now() - t0, error }),
      );
    };
    const calls = keys.slice(0, 8).map(timed);
    await sleep(400);
    server.freeze();
    let peakWaiting = 0;
    try {
      for (const key of keys.slice(8)) {
        calls.push(timed(key));
        await sleep(50);
        peakWaiting = Math.max(peakWaiting, pool.waitingCount);
      }
      await sleep(1_500);
    } finally {
      server.thaw();
    }
    const results = await Promise.all(calls);
    const slowest = Math.max(...results.map((r) => r.ms));
    console.log(
      `[rev20 pg] freeze: ${results.filter((r) => r.error).length} failed, slowest ${Math.round(slowest)} ms, peak waiting ${peakWaiting}`,
    );
    expect(slowest).toBeLessThan(1_200 + 800 + 1_200 + 1_500);
    const started = performance.now();
    const pending = new Set(keys);
    while (pending.size > 0 && performance.now() - started < 20_000) {
      await Promise.all(
        [...pending].map(async (key) => {
          const r = await idem.execute({ key, scope }, op(key)).catch((e: unknown) => e);
          if (!(r instanceof Error)) pending.delete(key);
        }),
      );
      if (pending.size > 0) await sleep(300);
    }
    console.log(
      `[rev20 pg] freeze: all settled ${Math.round(performance.now() - started)} ms after thaw`,
    );
    expect([...pending]).toEqual([]);
    expect([...runs].filter(([, n]) => n > 1)).toEqual([]);
    expect(pool.waitingCount).toBe(0);
    expect(pool.totalCount).toBeLessThanOrEqual(4);
    expect(await idem.drain(5_000)).toBe(0);
  }, 50_000);

  it('kill -9 mid-operation, restarted within the lease: the completion lands, the operation never runs again', async () => {
    const pool = makePool(4);
    const store = createPostgresStore({
      pool,
      keyPrefix: `k9${Date.now()}`,
      statementTimeoutMs: LIMIT,
    });
    const idem = createIdempotency<string>({
      store,
      leaseMs: 8_000,
      heartbeatMs: 1_000,
      storeTimeoutMs: 1_200,
      completionWaitMs: 1_200,
    });
    const scope = ['t', 'POST /k9'];
    const key = `k9-${Date.now()}`;
    let runs = 0;
    const first = await idem
      .execute({ key, scope }, async () => {
        runs++;
        await server.kill9();
        return 'charged';
      })
      .catch((e: unknown) => e);
    expect(first).toBeInstanceOf(StoreUnavailableError);
    const during = await idem
      .execute({ key, scope }, async () => {
        runs++;
        return 'x';
      })
      .catch((e: unknown) => e);
    expect((during as IdemError).code).toBe('STORE_UNAVAILABLE');
    await server.restart();
    const back = performance.now();
    let answer: unknown;
    while (performance.now() - back < 15_000) {
      answer = await idem
        .execute({ key, scope }, async () => {
          runs++;
          return 'again';
        })
        .catch((e: unknown) => e);
      if (!(answer instanceof Error)) break;
      await sleep(200);
    }
    console.log(
      `[rev20 pg] kill9: answered ${Math.round(performance.now() - back)} ms after restart`,
    );
    expect(answer).toMatchObject({ value: 'charged', replayed: true });
    expect(runs).toBe(1);
    expect(await idem.drain(5_000)).toBe(0);
  }, 50_000);

  it('down 12 s (kill -9) under a trickle: typed fast failures, nothing piles up, service returns by itself', async () => {
    const pool = makePool(4);
    const store = createPostgresStore({
      pool,
      keyPrefix: `down${Date.now()}`,
      statementTimeoutMs: LIMIT,
    });
    const idem = engineOn(store);
    const scope = ['t', 'POST /down'];
    expect((await idem.execute({ key: `w${Date.now()}`, scope }, async () => 'w')).value).toBe('w');
    await server.kill9();
    const seen: { ms: number; error: unknown }[] = [];
    let peakWaiting = 0;
    let peakTotal = 0;
    let runs = 0;
    const until = performance.now() + 12_000;
    while (performance.now() < until) {
      const batch = Array.from({ length: 6 }, (_, i) => {
        const t0 = performance.now();
        return idem
          .execute({ key: `d${i}-${Date.now()}`, scope }, async () => {
            runs++;
            return 'x';
          })
          .then(
            () => ({ ms: performance.now() - t0, error: undefined as unknown }),
            (error: unknown) => ({ ms: performance.now() - t0, error }),
          );
      });
      peakWaiting = Math.max(peakWaiting, pool.waitingCount);
      peakTotal = Math.max(peakTotal, pool.totalCount);
      seen.push(...(await Promise.all(batch)));
      await sleep(200);
    }
    const slowest = Math.max(...seen.map((s) => s.ms));
    console.log(
      `[rev20 pg] down: ${seen.length} calls, slowest ${Math.round(slowest)} ms, peak waiting ${peakWaiting}, peak total ${peakTotal}`,
    );
    expect(runs).toBe(0);
    for (const s of seen) expect((s.error as IdemError).code).toBe('STORE_UNAVAILABLE');
    expect(slowest).toBeLessThan(1_200 + 1_000);
    await server.restart();
    const back = performance.now();
    let ok = false;
    while (!ok && performance.now() - back < 10_000) {
      ok = await idem
        .execute({ key: `b${Date.now()}`, scope }, async () => 'b')
        .then(
          () => true,
          () => false,
        );
      if (!ok) await sleep(100);
    }
    console.log(`[rev20 pg] down: back ${Math.round(performance.now() - back)} ms after restart`);
    expect(ok).toBe(true);
    expect(await idem.drain(5_000)).toBe(0);
  }, 60_000);
});
