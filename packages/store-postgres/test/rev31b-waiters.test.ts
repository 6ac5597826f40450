/**
 * rev31b: adversarial review of outage31's bound on a pool's abandoned `connect()` requests
 * (src/abandoned-waiters.ts), against a PostgreSQL this file owns (SIGSTOP/SIGCONT/kill -9 of
 * its processes by PID; never the shared server).
 *
 * Every path that answers an abandoned waiter must bring the count down (a connection that
 * comes late goes back to the pool, an error counts too), so the store never keeps refusing
 * once the server answers; `unsent: true` must be true (no key taken); a pool with
 * `connectionTimeoutMillis` is not refused; an ended pool says it was ended.
 */
import { StoreUnavailableError } from '@idem/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresServer, startPostgres } from '../../../apps/chaos/src/postgres-server.js';
import { poolBlocked } from '../src/abandoned-waiters.js';
import { createPostgresStore, type PostgresStore, recommendedPoolConfig } from '../src/index.js';
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
  // A pool whose end() waits for a server that never answered is not waited for long.
  for (const end of ends)
    await Promise.race([end().catch(() => {}), new Promise((r) => setTimeout(r, 2_000))]);
  await server?.close();
});

const LIMIT = 150;

/** A pool that sets nothing (no connectionTimeoutMillis), its end registered. */
function barePool(max = 2): pg.Pool {
  const pool = new pg.Pool({ connectionString: server.url, max });
  pool.on('error', () => {});
  ends.push(() => pool.end());
  return pool;
}

const input = (key = newKey(), owner = newOwner()) => ({
  key,
  owner,
  fingerprint: 'f',
  leaseMs: 60_000,
  retentionMs: 600_000,
});

interface Attempt {
  key: string;
  error: unknown;
}

/**
 * With the server frozen: acquires in batches of 10 until one is refused at once by the
 * bound (at most 20 batches), every answer kept with its key.
 */
async function pileUp(store: PostgresStore): Promise<Attempt[]> {
  const attempts: Attempt[] = [];
  for (let batch = 0; batch < 20; batch++) {
    const keys = Array.from({ length: 10 }, () => newKey());
    const answers = await Promise.all(
      keys.map((key) =>
        store.acquire(input(key)).then(
          () => undefined,
          (error: unknown) => error,
        ),
      ),
    );
    for (const [i, error] of answers.entries()) attempts.push({ key: keys[i]!, error });
    if (answers.some((e) => refused(e))) break;
  }
  return attempts;
}

const refused = (error: unknown) =>
  error instanceof StoreUnavailableError &&
  error.message.includes('callers that stopped waiting for a pool connection');

/** Once the store acquires (a new pool's first connection may be slow on a loaded machine). */
async function serving(store: PostgresStore): Promise<void> {
  const kind = await pollUntil(
    async () => (await store.acquire(input()).catch(() => undefined))?.kind,
    (k) => k === 'acquired',
    20_000,
  );
  expect(kind).toBe('acquired');
}

/** Polls until the store acquires again (the server answering), then checks the pool. */
async function backInService(store: PostgresStore, pool: pg.Pool): Promise<void> {
  await serving(store);
  // Every waiter answered and no connection kept checked out by an abandoned one.
  await pollUntil(
    async () => pool.waitingCount === 0 && pool.totalCount === pool.idleCount,
    (ok) => ok,
    5_000,
  );
  expect(pool.waitingCount).toBe(0);
  expect(pool.totalCount).toBe(pool.idleCount);
  expect(poolBlocked(pool)).toBeUndefined();
  // The pool serves its full width at once: nothing leaked.
  // (Through a store with a generous limit on the same pool: on a loaded machine a call may
  // pass 150 ms by itself; a leaked connection would leave one of them waiting past 10 s.)
  const wide = createPostgresStore({ pool, statementTimeoutMs: 10_000 });
  const burst = await Promise.all(Array.from({ length: 6 }, () => wide.acquire(input())));
  for (const answer of burst) expect(answer.kind).toBe('acquired');
  expect(pool.totalCount).toBe(pool.idleCount);
}

describe('rev31b abandoned pool waiters', () => {
  it('late connections go back to the pool, the count returns to zero, unsent calls took no key', async () => {
    const pool = barePool();
    const store = createPostgresStore({ pool, statementTimeoutMs: LIMIT });
    await serving(store);
    server.freeze();
    let attempts: Attempt[];
    try {
      attempts = await pileUp(store);
    } finally {
      server.thaw();
    }
    expect(attempts.some((a) => refused(a.error))).toBe(true);
    const unsent = attempts.filter(
      (a) => a.error instanceof StoreUnavailableError && a.error.unsent,
    );
    expect(unsent.length).toBeGreaterThan(64);
    await backInService(store, pool);
    // Nothing an unsent call asked for was applied, even after the server resumed and every
    // queued request got its connection: each key is free for anyone (a first acquisition).
    // (Read through a generous limit: these checks are not about the time limit.)
    const patient = createPostgresStore({ pool, statementTimeoutMs: 10_000 });
    for (const { key } of unsent) {
      expect(await patient.get(key)).toBeUndefined();
      const answer = await patient.acquire(input(key));
      expect(answer).toMatchObject({ kind: 'acquired', fence: 1 });
    }
  }, 90_000);

  it('waiters answered with an error (kill -9 while frozen, restart) count down too', async () => {
    const pool = barePool();
    const store = createPostgresStore({ pool, statementTimeoutMs: LIMIT });
    await serving(store);
    server.freeze();
    let attempts: Attempt[];
    try {
      attempts = await pileUp(store);
    } finally {
      await server.kill9();
    }
    expect(attempts.some((a) => refused(a.error))).toBe(true);
    await server.restart();
    await backInService(store, pool);
  }, 90_000);

  it('two stores on one pool share the bound and both come back', async () => {
    const pool = barePool();
    const a = createPostgresStore({ pool, statementTimeoutMs: LIMIT });
    const b = createPostgresStore({ pool, statementTimeoutMs: 4 * LIMIT });
    await serving(a);
    // The app's own statement on the same pool, queued through the outage.
    let appQuery: Promise<unknown> | undefined;
    server.freeze();
    try {
      appQuery = pool.query('SELECT 1 AS one').catch((e: unknown) => e);
      const attempts = await pileUp(a);
      expect(attempts.some((x) => refused(x.error))).toBe(true);
      // b never waited, yet the pool's queue is full of a's abandoned requests: refused.
      const error = await b.acquire(input()).catch((e: unknown) => e);
      expect(refused(error)).toBe(true);
      expect((error as StoreUnavailableError).unsent).toBe(true);
    } finally {
      server.thaw();
    }
    expect(await appQuery).toMatchObject({ rows: [{ one: 1 }] });
    await backInService(a, pool);
    await serving(b);
  }, 90_000);

  it('a pool with connectionTimeoutMillis (recommendedPoolConfig) is never refused by the bound', async () => {
    const pool = new pg.Pool({
      connectionString: server.url,
      ...recommendedPoolConfig({ statementTimeoutMs: LIMIT }),
      max: 2,
    });
    pool.on('error', () => {});
    ends.push(() => pool.end());
    const store = createPostgresStore({ pool, statementTimeoutMs: LIMIT });
    await serving(store);
    server.freeze();
    const errors: unknown[] = [];
    try {
      for (let batch = 0; batch < 10; batch++) {
        const answers = await Promise.all(
          Array.from({ length: 10 }, () =>
            store.acquire(input()).then(
              () => undefined,
              (e: unknown) => e,
            ),
          ),
        );
        errors.push(...answers);
      }
    } finally {
      server.thaw();
    }
    expect(errors).toHaveLength(100);
    for (const e of errors) expect(e).toBeInstanceOf(StoreUnavailableError);
    expect(errors.filter(refused)).toEqual([]);
    expect(poolBlocked(pool)).toBeUndefined();
    await backInService(store, pool);
  }, 90_000);

  it('a pool whose connectionTimeoutMillis is longer than the statement limit: refusals end while the server is still silent', async () => {
    const pool = new pg.Pool({
      connectionString: server.url,
      max: 2,
      connectionTimeoutMillis: 1_500,
    });
    pool.on('error', () => {});
    ends.push(() => pool.end());
    const store = createPostgresStore({ pool, statementTimeoutMs: LIMIT });
    await serving(store);
    server.freeze();
    let cleared: string | undefined = 'never looked';
    let late: unknown;
    try {
      const attempts = await pileUp(store);
      expect(attempts.some((a) => refused(a.error))).toBe(true);
      // Still frozen: the pool's own time limit answers every queued request, so the bound
      // lets calls through again (they time out, not refused), with no thaw.
      cleared = await pollUntil(
        async () => poolBlocked(pool),
        (why) => why === undefined,
        10_000,
      );
      late = await store.acquire(input()).catch((e: unknown) => e);
    } finally {
      server.thaw();
    }
    expect(cleared).toBeUndefined();
    expect(late).toBeInstanceOf(StoreUnavailableError);
    expect(refused(late)).toBe(false);
    await backInService(store, pool);
  }, 90_000);
});
