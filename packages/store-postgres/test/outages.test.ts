import { deriveStorageKey, StoreUnavailableError } from '@idem/core';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { acquireInput, DATABASE_URL, HOUR, makePool, newKey, randomName, sleep } from './pg-env.js';
import { startProxy } from './tcp-proxy.js';

const table = inject('pgTable');
const raw = makePool({ max: 2 });
afterAll(() => raw.end());

const url = new URL(DATABASE_URL);
const TIMEOUT = 500;
// Slack for a loaded 2-core machine.
const SLACK = 1_000;

/** A store behind a proxy, with the recommended pool settings at a short timeout. */
async function behindProxy(bare = false) {
  const proxy = await startProxy({ host: url.hostname, port: Number(url.port || 5432) });
  const via = new URL(DATABASE_URL);
  via.hostname = '127.0.0.1';
  via.port = String(proxy.port);
  const pool = bare
    ? new pg.Pool({ connectionString: via.toString(), max: 4 })
    : makePool({
        connectionString: via.toString(),
        statement_timeout: TIMEOUT,
        lock_timeout: TIMEOUT,
        query_timeout: TIMEOUT,
        connectionTimeoutMillis: TIMEOUT,
        max: 4,
      });
  pool.on('error', () => {});
  const store = createPostgresStore({
    pool,
    table,
    keyPrefix: randomName('out'),
    statementTimeoutMs: TIMEOUT,
  });
  return {
    proxy,
    store,
    async close() {
      await proxy.close();
      await pool.end().catch(() => {});
    },
  };
}

/** Runs `call`, expecting StoreUnavailableError with a cause or a timeout, within the bound. */
async function failsWithin(call: () => Promise<unknown>, boundMs: number) {
  const started = performance.now();
  const error = await call().then(
    () => undefined,
    (e: unknown) => e,
  );
  const elapsed = performance.now() - started;
  expect(error).toBeInstanceOf(StoreUnavailableError);
  expect(elapsed).toBeLessThan(boundMs);
  return elapsed;
}

/** Polls until a call succeeds; answers how long it took. */
async function recovers(call: () => Promise<unknown>, withinMs: number): Promise<number> {
  const started = performance.now();
  for (;;) {
    try {
      await call();
      return performance.now() - started;
    } catch (error) {
      expect(error).toBeInstanceOf(StoreUnavailableError);
      if (performance.now() - started > withinMs) throw error;
      await sleep(50);
    }
  }
}

describe('every call is bounded, and an outage ends by itself', () => {
  it('a silent connection: calls fail within the timeout; service returns when it speaks again', async () => {
    const t = await behindProxy();
    try {
      await t.store.acquire(acquireInput(newKey()));
      t.proxy.mode = 'silent';
      for (const call of [
        () => t.store.acquire(acquireInput(newKey())),
        () => t.store.get(newKey()),
        () =>
          t.store.complete({
            key: newKey(),
            owner: 'o',
            outcome: new Uint8Array(1),
            retentionMs: HOUR,
          }),
      ])
        await failsWithin(call, TIMEOUT + SLACK);
      t.proxy.mode = 'pass';
      const back = await recovers(() => t.store.acquire(acquireInput(newKey())), 5_000);
      console.log(
        `[outages] silent: each call failed within ${TIMEOUT} ms + slack; back ${Math.round(back)} ms after the proxy spoke again`,
      );
    } finally {
      await t.close();
    }
  });

  it('with a pool that sets no timeouts at all, the store still bounds every call', async () => {
    const t = await behindProxy(true);
    try {
      await t.store.acquire(acquireInput(newKey()));
      t.proxy.mode = 'silent';
      // The pool's 4 connections get stuck one by one; later calls wait for a free one.
      for (let i = 0; i < 6; i++) await failsWithin(() => t.store.get(newKey()), TIMEOUT + SLACK);
    } finally {
      await t.close();
    }
  });

  it('a server that goes away: calls fail fast; service returns once it is back', async () => {
    const t = await behindProxy();
    try {
      await t.store.acquire(acquireInput(newKey()));
      t.proxy.mode = 'refuse';
      for (let i = 0; i < 5; i++) await failsWithin(() => t.store.get(newKey()), TIMEOUT + SLACK);
      t.proxy.mode = 'pass';
      const back = await recovers(() => t.store.get(newKey()), 5_000);
      expect(back).toBeLessThan(5_000);
    } finally {
      await t.close();
    }
  });

  it('terminated backends: the pool replaces them', async () => {
    const pool = makePool({ application_name: randomName('idem_kill'), max: 4 });
    try {
      const store = createPostgresStore({ pool, table, keyPrefix: randomName('kill') });
      await Promise.all(Array.from({ length: 4 }, () => store.acquire(acquireInput(newKey()))));
      const { rowCount } = await raw.query(
        'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1',
        [(pool as unknown as { options: { application_name: string } }).options.application_name],
      );
      expect(rowCount).toBeGreaterThan(0);
      await sleep(100);
      await recovers(() => store.acquire(acquireInput(newKey())), 5_000);
    } finally {
      await pool.end();
    }
  });

  it('a record locked by a stuck transaction: acquire gives up within the lock timeout', async () => {
    const t = await behindProxy();
    const holder = await raw.connect();
    try {
      const key = newKey();
      const first = acquireInput(key);
      await recovers(() => t.store.acquire(first), 10_000);
      await recovers(() => t.store.release({ key, owner: first.owner, retentionMs: HOUR }), 10_000);
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM ${table} WHERE key = $1 FOR UPDATE`, [t.store.rowKey(key)]);
      // Released: the acquire must take the row lock, which the stuck transaction holds.
      const elapsed = await failsWithin(() => t.store.acquire(acquireInput(key)), TIMEOUT + SLACK);
      expect(elapsed).toBeGreaterThanOrEqual(TIMEOUT * 0.8);
      // The server ends the abandoned statement by its own lock_timeout, which a loaded
      // machine may fire after the client gave up: let it end before the lock goes, or it
      // would take the key (a call that failed may still be applied, as documented).
      const holderPid = (holder as unknown as { processID: number }).processID;
      for (let i = 0; i < 200; i++) {
        const { rows } = await raw.query(
          'SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))',
          [holderPid],
        );
        if (rows[0].n === 0) break;
        await sleep(25);
      }
      await holder.query('ROLLBACK');
      // The key comes back. A loaded machine may take longer than the 500 ms limits to open a
      // connection through the proxy: the same acquisition is tried again (an acquire repeated
      // by its owner is the same acquisition, so one that timed out yet applied is found).
      const again = acquireInput(key);
      let result: unknown;
      await recovers(async () => {
        result = await t.store.acquire(again);
      }, 10_000);
      expect(result).toMatchObject({
        kind: 'acquired',
        fence: 2,
      });
    } finally {
      await holder.query('ROLLBACK').catch(() => {});
      holder.release();
      await t.close();
    }
  });

  it('a transaction whose connection falls silent before COMMIT: the call ends in bound, nothing commits, the key comes back', async () => {
    const t = await behindProxy();
    try {
      const engine = createPostgresIdempotency<string>({
        store: t.store,
        heartbeatMs: false,
        storeTimeoutMs: TIMEOUT * 2,
        completionWaitMs: TIMEOUT * 4,
      });
      const scope = randomName('silent');
      const started = performance.now();
      const error = await engine
        .execute({ key: 'k', scope }, async ({ tx }) => {
          await tx.query('SELECT 1');
          t.proxy.mode = 'silent';
          return 'never committed';
        })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      // The completion and the settling behind it time out: the caller is answered within
      // completionWaitMs (plus slack), while core keeps settling in the background.
      expect((error as { code?: string }).code).toBe('STORE_UNAVAILABLE');
      expect(performance.now() - started).toBeLessThan(TIMEOUT * 4 + SLACK + TIMEOUT);
      t.proxy.mode = 'pass';
      // The background settling finds the record still in progress: it releases the key.
      expect(await engine.drain(10_000)).toBe(0);
      const record = await t.store.get(deriveStorageKey(scope, 'k'));
      expect(record?.status).toBe('released');
      expect((await engine.execute({ key: 'k', scope }, async () => 'second')).value).toBe(
        'second',
      );
    } finally {
      await t.close();
    }
  });
});
