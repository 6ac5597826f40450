/**
 * rev31b: edges of outage31's bound on a pool's abandoned `connect()` requests, against a
 * PostgreSQL this file owns (SIGSTOP/SIGCONT of its processes by PID).
 *
 * - A pool the app ended (`pool.end()`) while abandoned requests were queued: pg-pool never
 *   answers queued requests after `end()`, so the count never comes down; the store's calls
 *   must say the pool was ended, not blame a silent server and `connectionTimeoutMillis`.
 * - Calls that were all waiting at once when the server fell silent are all abandoned: the
 *   bound is on the requests left when a call starts, so more than 64 can stay queued (what
 *   the README says: 64 plus the calls started within one `statementTimeoutMs`).
 * - A transaction's client (checked out of the store's own pool) whose connection was lost:
 *   the error must not tell to "give the store a pg.Pool" (it has one), as outage31's hint for
 *   a `pg.Client` given as `pool` did for every client.
 * - The transactional engine's own `pool.connect()` (not counted): with the server silent its
 *   acquisitions fail first, so its late requests stay as few as the executions in flight.
 */

import { execFileSync } from 'node:child_process';
import { StoreUnavailableError } from '@idem/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresServer, startPostgres } from '../../../apps/chaos/src/postgres-server.js';
import { poolBlocked } from '../src/abandoned-waiters.js';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { newKey, newOwner, pollUntil } from './pg-env.js';

let server: PostgresServer;
const ends: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  server = await startPostgres();
  const pool = new pg.Pool({ connectionString: server.url, max: 1 });
  await createPostgresStore({ pool }).ensureSchema();
  await pool.end();
}, 60_000);
afterAll(async () => {
  server?.thaw();
  for (const end of ends)
    await Promise.race([end().catch(() => {}), new Promise((r) => setTimeout(r, 2_000))]);
  await server?.close();
});

const LIMIT = 150;

function barePool(max = 2): pg.Pool {
  const pool = new pg.Pool({ connectionString: server.url, max });
  pool.on('error', () => {});
  ends.push(() => (pool.ending ? Promise.resolve() : pool.end()));
  return pool;
}

const input = () => ({
  key: newKey(),
  owner: newOwner(),
  fingerprint: 'f',
  leaseMs: 60_000,
  retentionMs: 600_000,
});

/** Once the store acquires (a server just thawed by an earlier test may answer late). */
async function serving(store: ReturnType<typeof createPostgresStore>): Promise<void> {
  const kind = await pollUntil(
    async () => (await store.acquire(input()).catch(() => undefined))?.kind,
    (k) => k === 'acquired',
    20_000,
  );
  expect(kind).toBe('acquired');
}

const settle = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: unknown) => e,
  );

describe('rev31b abandoned pool waiters: edges', () => {
  it('a pool ended with abandoned requests queued: calls say the pool was ended', async () => {
    const pool = barePool();
    const store = createPostgresStore({ pool, statementTimeoutMs: LIMIT });
    await serving(store);
    server.freeze();
    let ended: Promise<unknown>;
    try {
      for (let batch = 0; batch < 10 && !poolBlocked(pool); batch++)
        await Promise.all(Array.from({ length: 10 }, () => settle(store.acquire(input()))));
      expect(poolBlocked(pool)).toBeDefined();
      ended = pool.end().catch(() => {});
    } finally {
      server.thaw();
    }
    await Promise.race([ended, new Promise((r) => setTimeout(r, 5_000))]);
    const error = await settle(store.acquire(input()));
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as Error).message).toContain('Cannot use a pool after calling end');
    expect((error as Error).message).not.toContain('connectionTimeoutMillis');
  }, 60_000);

  it('calls all waiting when the server falls silent are all left queued (past 64), then refused, then served', async () => {
    const pool = barePool();
    const store = createPostgresStore({ pool, statementTimeoutMs: LIMIT });
    await serving(store);
    server.freeze();
    let waiting = 0;
    let next: unknown;
    try {
      const errors = await Promise.all(
        Array.from({ length: 150 }, () => settle(store.acquire(input()))),
      );
      for (const e of errors) expect(e).toBeInstanceOf(StoreUnavailableError);
      waiting = pool.waitingCount;
      next = await settle(store.acquire(input()));
    } finally {
      server.thaw();
    }
    expect(waiting).toBeGreaterThan(64);
    expect((next as Error).message).toContain('callers that stopped waiting');
    expect((next as StoreUnavailableError).unsent).toBe(true);
    await serving(store);
    expect(pool.waitingCount).toBe(0);
    expect(poolBlocked(pool)).toBeUndefined();
  }, 60_000);

  it('the transactional engine on a silent server: its own late connection requests stay few', async () => {
    const pool = barePool(4);
    const store = createPostgresStore({ pool, statementTimeoutMs: LIMIT });
    const engine = createPostgresIdempotency<number>({
      store,
      leaseMs: 3_000,
      storeTimeoutMs: 2 * LIMIT,
    });
    const op = async ({ tx }: { tx: pg.PoolClient }) => {
      await tx.query('SELECT 1');
      return 1;
    };
    expect(await engine.execute({ key: newKey(), scope: 's' }, op as never)).toMatchObject({
      value: 1,
    });
    server.freeze();
    let peak = 0;
    const errors: unknown[] = [];
    try {
      for (let batch = 0; batch < 10; batch++) {
        errors.push(
          ...(await Promise.all(
            Array.from({ length: 10 }, () =>
              settle(engine.execute({ key: newKey(), scope: 's' }, op as never)),
            ),
          )),
        );
        peak = Math.max(peak, pool.waitingCount);
      }
    } finally {
      server.thaw();
    }
    console.log(`[rev31b engine] peak pool waitingCount ${peak} over 100 executions frozen`);
    expect(errors.filter((e) => e === undefined)).toEqual([]);
    // At most the bound, the calls of one batch and the engine's few of its own.
    expect(peak).toBeLessThanOrEqual(64 + 10 + 10);
    const value = await pollUntil(
      async () =>
        (
          (await engine
            .execute({ key: newKey(), scope: 's' }, op as never)
            .catch(() => undefined)) as { value?: number } | undefined
        )?.value,
      (v) => v === 1,
      20_000,
    );
    expect(value).toBe(1);
    await pollUntil(
      async () => pool.waitingCount,
      (n) => n === 0,
      5_000,
    );
    expect(pool.waitingCount).toBe(0);
    await engine.drain(5_000);
  }, 90_000);

  it("a transaction's pool client that lost its connection: no advice to give the store a pool", async () => {
    const pool = barePool();
    const store = createPostgresStore({ pool, statementTimeoutMs: 2_000 });
    await serving(store);
    const acquisition = input();
    expect((await store.acquire(acquisition)).kind).toBe('acquired');
    const client = await pool.connect();
    client.on('error', () => {});
    await client.query('BEGIN');
    const pid = (client as unknown as { processID: number }).processID;
    const killer = await pool.connect();
    await killer.query('SELECT pg_terminate_backend($1)', [pid]);
    killer.release();
    await pollUntil(
      async () => (client as unknown as { _queryable: boolean })._queryable,
      (q) => q === false,
      5_000,
    );
    const error = await settle(
      store.completeIn(client, {
        key: acquisition.key,
        owner: acquisition.owner,
        outcome: new Uint8Array([1]),
        retentionMs: acquisition.retentionMs,
      }),
    );
    client.release(true);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as Error).message).toContain('not queryable');
    expect((error as Error).message).not.toContain('give the store a pg.Pool');
  }, 60_000);

  it('the transactional engine with only the postmaster frozen (open connections serve, new ones hang): waiters stay few, service returns', async () => {
    const pool = barePool(4);
    const store = createPostgresStore({ pool, statementTimeoutMs: LIMIT });
    const engine = createPostgresIdempotency<number>({
      store,
      leaseMs: 3_000,
      storeTimeoutMs: 2 * LIMIT,
    });
    const op = async ({ tx }: { tx: pg.PoolClient }) => {
      await tx.query('SELECT 1');
      return 1;
    };
    await serving(store);
    const { rows } = await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const ppid = Number(
      execFileSync('ps', ['-o', 'ppid=', '-p', String(rows[0]!.pid)], { encoding: 'utf8' }).trim(),
    );
    expect(ppid).toBeGreaterThan(1);
    process.kill(ppid, 'SIGSTOP');
    let peak = 0;
    let served = 0;
    try {
      for (let batch = 0; batch < 20; batch++) {
        const answers = await Promise.all(
          Array.from({ length: 10 }, () =>
            engine.execute({ key: newKey(), scope: 's' }, op as never).then(
              () => true,
              () => false,
            ),
          ),
        );
        served += answers.filter(Boolean).length;
        peak = Math.max(peak, pool.waitingCount);
      }
    } finally {
      process.kill(ppid, 'SIGCONT');
    }
    console.log(
      `[rev31b engine, postmaster frozen] ${served} of 200 served, peak pool waitingCount ${peak}`,
    );
    expect(peak).toBeLessThanOrEqual(64 + 10 + 10);
    const value = await pollUntil(
      async () =>
        (
          (await engine
            .execute({ key: newKey(), scope: 's' }, op as never)
            .catch(() => undefined)) as { value?: number } | undefined
        )?.value,
      (v) => v === 1,
      20_000,
    );
    expect(value).toBe(1);
    await pollUntil(
      async () => pool.waitingCount,
      (n) => n === 0,
      5_000,
    );
    expect(pool.waitingCount).toBe(0);
    expect(poolBlocked(pool)).toBeUndefined();
    await engine.drain(5_000);
  }, 90_000);

  it('a pool larger than the bound, new connections hanging (postmaster frozen) but an open one serving: calls are served, not refused', async () => {
    // Each call that finds no idle connection opens a new one, which hangs: one pool slot
    // each (bounded by max), not a request in the pool's queue.
    const pool = barePool(80);
    const store = createPostgresStore({ pool, statementTimeoutMs: LIMIT });
    await serving(store);
    const { rows } = await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const ppid = Number(
      execFileSync('ps', ['-o', 'ppid=', '-p', String(rows[0]!.pid)], { encoding: 'utf8' }).trim(),
    );
    expect(ppid).toBeGreaterThan(1);
    process.kill(ppid, 'SIGSTOP');
    const later: unknown[] = [];
    try {
      await Promise.all(Array.from({ length: 100 }, () => settle(store.acquire(input()))));
      // The open connection is idle again and answers: these are served by it.
      for (let i = 0; i < 5; i++)
        later.push(
          await store.acquire(input()).then(
            (r) => r.kind,
            (e: unknown) => (e as Error).message,
          ),
        );
    } finally {
      process.kill(ppid, 'SIGCONT');
    }
    // Served, never refused by the bound (a loaded machine may let one pass its 150 ms).
    expect(later.filter((x) => String(x).includes('stopped waiting'))).toEqual([]);
    expect(later.filter((x) => x === 'acquired').length).toBeGreaterThanOrEqual(3);
    await serving(store);
    await pollUntil(
      async () => poolBlocked(pool),
      (why) => why === undefined,
      10_000,
    );
    expect(poolBlocked(pool)).toBeUndefined();
  }, 90_000);
});
