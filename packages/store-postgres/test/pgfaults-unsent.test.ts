// A statement that only waited for a pool connection is never sent once its caller stopped
// waiting, and its failure says so (`unsent`). Before: `pool.query` kept the request queued
// and sent it when a connection freed up; the failure read "may have been applied", so core
// queued a give-back for it, at most 64 at once. Seen against Express and Fastify on a
// PostgreSQL frozen for 8 s (SIGSTOP, 200 clients retrying): the 64 give-backs went to
// acquires that never reached the server, and acquires the resumed server did apply held
// their keys (409, no handler running) for a whole 30 s lease.
import { StoreUnavailableError } from '@idem/core';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createPostgresStore } from '../src/index.js';
import { acquireInput, makePool, newKey, randomName, sleep } from './pg-env.js';

const table = inject('pgTable');

describe('a statement that waited for a connection past its time limit', () => {
  const pool = makePool({ max: 1 });
  afterAll(() => pool.end());

  it('fails as unsent and is never sent once the connection frees up', async () => {
    const store = createPostgresStore({
      pool,
      table,
      keyPrefix: randomName('unsent'),
      statementTimeoutMs: 300,
    });
    // The pool's only connection is busy for 1.2 s.
    const busy = pool.query({ text: 'SELECT pg_sleep(1.2)', query_timeout: 5_000 } as never);
    await sleep(50);
    const key = newKey();
    const failure = await store.acquire(acquireInput(key)).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(StoreUnavailableError);
    expect((failure as StoreUnavailableError).unsent).toBe(true);
    await busy;
    await sleep(300);
    // The connection is free again: the abandoned acquire did not go out with it.
    expect(await store.get(key)).toBeUndefined();
    // And the pool works as before: the connection went back, healthy.
    expect((await store.acquire(acquireInput(key))).kind).toBe('acquired');
    expect(pool.totalCount).toBe(1);
  });

  it('one that was sent and not answered in time may have been applied: not unsent', async () => {
    const keyPrefix = randomName('sent');
    const store = createPostgresStore({ pool, table, keyPrefix, statementTimeoutMs: 300 });
    const key = newKey();
    const input = acquireInput(key);
    expect((await store.acquire(input)).kind).toBe('acquired');
    // Another session holds the record's row: the release is sent, then waits for the lock
    // past its limit.
    const locker = makePool({ max: 1 });
    const session = await locker.connect();
    try {
      await session.query('BEGIN');
      const { rowCount } = await session.query(
        `SELECT 1 FROM ${table} WHERE starts_with(key, $1) FOR UPDATE`,
        [keyPrefix],
      );
      expect(rowCount).toBe(1);
      const failure = await store
        .release({ key, owner: input.owner, retentionMs: input.retentionMs })
        .catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(StoreUnavailableError);
      expect((failure as StoreUnavailableError).unsent).toBe(false);
      await session.query('ROLLBACK');
    } finally {
      session.release();
      await locker.end();
    }
  });
});
