/**
 * outage31: store-postgres against real faults of a PostgreSQL this file owns (SIGSTOP of
 * every process, kill -9 and restart).
 *
 * - A pool built without `connectionTimeoutMillis` and a server that falls silent: every call
 *   already failed within `statementTimeoutMs`, but each one left its `connect()` request in
 *   the pool's queue until the server answered again, one per call for as long as the outage
 *   lasted (100 calls: about 98 waiters). Now at most 64 stay queued; later calls fail at
 *   once, typed and `unsent`, and the service returns by itself after SIGCONT.
 * - A `pg.Client` given as `pool`: after the server restarted, it never connects again and
 *   every call fails; the error now says so and names the remedy (a `pg.Pool`).
 */
import { StoreUnavailableError } from '@idem/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresServer, startPostgres } from '../../../apps/chaos/src/postgres-server.js';
import { createPostgresStore } from '../src/index.js';
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
  for (const end of ends) await end().catch(() => {});
  await server?.close();
});

const acquireInput = () => ({
  key: newKey(),
  owner: newOwner(),
  fingerprint: 'f',
  leaseMs: 5_000,
  retentionMs: 60_000,
});

describe('outage31 PostgreSQL outages', () => {
  it('a silent server and a pool without connectionTimeoutMillis: the waiters of abandoned calls stay bounded, calls fail typed, service returns', async () => {
    // Nothing set on purpose: no connectionTimeoutMillis, no query_timeout of the pool's own.
    const pool = new pg.Pool({ connectionString: server.url, max: 2 });
    pool.on('error', () => {});
    ends.push(() => pool.end());
    const store = createPostgresStore({ pool, statementTimeoutMs: 150 });
    // The first call opens the pool's connections: under a loaded machine (a CI run) that
    // alone can pass 150 ms, so it is asked until it acquires (the store works before the fault).
    const first = await pollUntil(
      async () => (await store.acquire(acquireInput()).catch(() => undefined))?.kind,
      (k) => k === 'acquired',
      15_000,
    );
    expect(first).toBe('acquired');

    server.freeze();
    const failures: unknown[] = [];
    let peakWaiting = 0;
    try {
      for (let batch = 0; batch < 10; batch++) {
        const calls = Array.from({ length: 10 }, () =>
          store.acquire(acquireInput()).then(
            () => undefined,
            (error: unknown) => error,
          ),
        );
        for (const answer of await Promise.all(calls)) failures.push(answer);
        peakWaiting = Math.max(peakWaiting, pool.waitingCount);
      }
    } finally {
      server.thaw();
    }
    expect(failures).toHaveLength(100);
    for (const failure of failures) expect(failure).toBeInstanceOf(StoreUnavailableError);
    // Before: one queued connect() per call of the outage (98 of 100 here). Now at most 64
    // given up on, besides the calls of one batch still waiting (each checked on its way in).
    expect(peakWaiting).toBeLessThanOrEqual(64 + 10);
    const refused = failures.filter((f) =>
      (f as Error).message.includes('connectionTimeoutMillis'),
    );
    expect(refused.length).toBeGreaterThan(0);
    for (const f of refused) expect((f as StoreUnavailableError).unsent).toBe(true);

    // Back by itself once the server answers: the queue drains, a call acquires.
    const kind = await pollUntil(
      async () => (await store.acquire(acquireInput()).catch(() => undefined))?.kind,
      (k) => k === 'acquired',
      15_000,
    );
    expect(kind).toBe('acquired');
    expect(pool.waitingCount).toBe(0);
  }, 60_000);

  it('a pg.Client after a kill -9 and restart: typed failures that say the client never reconnects', async () => {
    const client = new pg.Client({ connectionString: server.url });
    client.on('error', () => {});
    await client.connect();
    ends.push(() => client.end());
    const store = createPostgresStore({ pool: client, statementTimeoutMs: 1_000 });
    expect((await store.acquire(acquireInput())).kind).toBe('acquired');

    await server.kill9();
    await server.restart();
    // The server serves again (a fresh connection works), the given client never will.
    const check = new pg.Client({ connectionString: server.url });
    await check.connect();
    expect((await check.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    await check.end();
    for (let attempt = 0; attempt < 3; attempt++) {
      const error = await store.acquire(acquireInput()).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(StoreUnavailableError);
      expect((error as Error).message).toContain('a pg.Client never reconnects');
      expect((error as Error).message).toContain('pg.Pool');
    }
  }, 60_000);
});
