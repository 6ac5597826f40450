import {
  deriveStorageKey,
  InvalidInputError,
  OutcomeNotRecordedError,
  OutcomeTooLargeError,
  StoreFullError,
  StoreUnavailableError,
} from '@idem/core';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { type Queryable, runStatement } from '../src/pg-call.js';
import { acquireInput, HOUR, makePool, newKey, randomName } from './pg-env.js';

/** Adversarial review (wt/pgrev): bad input, outcomes that cannot be stored, schema upkeep. */
const schema = inject('pgSchema');
const table = inject('pgTable');
const charges = `"${schema}".pgrev_charges`;
const pool = makePool({ max: 4 });
const raw = makePool({ max: 2 });

beforeAll(async () => {
  await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
});
afterAll(async () => {
  await pool.end();
  await raw.end();
});

const rowsOf = async (scope: string) =>
  (await raw.query(`SELECT fence FROM ${charges} WHERE scope = $1`, [scope])).rows.map((r) =>
    Number(r.fence),
  );

describe('bad input', () => {
  it('an isolationLevel named like an Object.prototype member is refused at construction', () => {
    const store = createPostgresStore({ pool, table });
    // Was: BEGIN['toString'] is a function, so the check passed and every execute failed
    // later with a syntax error (TransactionNotCommittedError), never InvalidInputError.
    for (const level of ['toString', 'constructor', '__proto__', 'hasOwnProperty'])
      expect(() => createPostgresIdempotency({ store, isolationLevel: level as never })).toThrow(
        InvalidInputError,
      );
  });
});

describe('an outcome that cannot be stored, through the transactional engine', () => {
  /** An operation that writes one business row and returns `value`. */
  const charging =
    (scope: string, value: unknown, runs: { n: number }) =>
    async ({ tx, fence }: { tx: pg.PoolClient; fence: number }) => {
      runs.n++;
      await tx.query(`INSERT INTO ${charges} (scope, fence) VALUES ($1, $2)`, [scope, fence]);
      return value;
    };

  it('a value that is not serialisable: the row commits once with a marker; a retry never runs', async () => {
    const store = createPostgresStore({ pool, table, keyPrefix: randomName('ns') });
    const engine = createPostgresIdempotency<unknown>({ store, heartbeatMs: false });
    const scope = randomName('scope');
    const runs = { n: 0 };
    await expect(
      engine.execute({ key: 'k', scope }, charging(scope, { amount: 10n }, runs)),
    ).rejects.toBeInstanceOf(OutcomeNotRecordedError);
    await expect(
      engine.execute({ key: 'k', scope }, charging(scope, 'again', runs)),
    ).rejects.toBeInstanceOf(OutcomeNotRecordedError);
    expect(runs.n).toBe(1);
    expect(await rowsOf(scope)).toEqual([1]);
    expect((await store.get(deriveStorageKey(scope, 'k')))?.status).toBe('completed');
  });

  it('a value larger than the store takes: the row commits once with a marker; a retry never runs', async () => {
    const store = createPostgresStore({
      pool,
      table,
      keyPrefix: randomName('big'),
      maxOutcomeBytes: 512,
    });
    const engine = createPostgresIdempotency<unknown>({ store, heartbeatMs: false });
    const scope = randomName('scope');
    const runs = { n: 0 };
    await expect(
      engine.execute({ key: 'k', scope }, charging(scope, 'x'.repeat(4_096), runs)),
    ).rejects.toBeInstanceOf(OutcomeTooLargeError);
    await expect(
      engine.execute({ key: 'k', scope }, charging(scope, 'again', runs)),
    ).rejects.toBeInstanceOf(OutcomeNotRecordedError);
    expect(runs.n).toBe(1);
    expect(await rowsOf(scope)).toEqual([1]);
  });
});

describe('ensureSchema() on a live table', () => {
  it('runs at a process start while a transaction holds a write on the table: neither waits', async () => {
    // A table of its own: this test holds a table lock.
    const own = `${schema}.pgrev_ddl`;
    const store = createPostgresStore({ pool, table: own });
    await store.ensureSchema();
    const key = newKey();
    const owner = 'o1';
    await store.acquire(acquireInput(key, { owner }));
    // A caller's transaction with its completion sent (completeIn) and not committed yet:
    // it holds ROW EXCLUSIVE on the table, as every store write does while it runs.
    const holder = await raw.connect();
    try {
      await holder.query('BEGIN');
      const done = await store.completeIn(holder, {
        key,
        owner,
        outcome: new Uint8Array([1]),
        retentionMs: 60_000,
      });
      expect(done.ok).toBe(true);
      // Another process starts and runs ensureSchema(). Was: CREATE INDEX IF NOT EXISTS
      // takes a SHARE lock even when the index exists, so it waited for that transaction
      // (failing at lock_timeout), and every store write queued behind it meanwhile.
      const started = performance.now();
      const next = createPostgresStore({ pool, table: own });
      const ensured = next.ensureSchema().then(
        () => 'done',
        (error: unknown) => String(error),
      );
      // A store write of another key meanwhile is not stuck behind it either.
      const other = await next.acquire(acquireInput(newKey()));
      expect(other.kind).toBe('acquired');
      expect(await ensured).toBe('done');
      expect(performance.now() - started).toBeLessThan(1_500);
      await holder.query('COMMIT');
    } finally {
      await holder.query('ROLLBACK').catch(() => {});
      holder.release();
    }
    expect((await store.get(key))?.status).toBe('completed');
  });
});

describe('README claims without a test before', () => {
  it('preparedStatements: false sends no statement name, and every step works', async () => {
    const store = createPostgresStore({
      pool,
      table,
      keyPrefix: randomName('unprep'),
      preparedStatements: false,
    });
    const names: unknown[] = [];
    const query = pool.query.bind(pool) as (...args: unknown[]) => unknown;
    const spy = (...args: unknown[]) => {
      names.push((args[0] as { name?: unknown }).name);
      return query(...args);
    };
    (pool as unknown as { query: typeof spy }).query = spy;
    try {
      const key = newKey();
      const input = acquireInput(key);
      expect((await store.acquire(input)).kind).toBe('acquired');
      const owner = { key, owner: input.owner, retentionMs: HOUR };
      expect((await store.extend({ ...owner, leaseMs: 30_000 })).ok).toBe(true);
      expect(await store.complete({ ...owner, outcome: new Uint8Array([7]) })).toEqual({
        ok: true,
      });
      expect((await store.get(key))?.outcome).toEqual(Buffer.from([7]));
      expect(names).toHaveLength(4);
      expect(names.every((name) => name === undefined)).toBe(true);
    } finally {
      (pool as unknown as { query: unknown }).query = query;
    }
  });

  it('deadlines are capped at 2^53 - 1 ms and read back exactly', async () => {
    const store = createPostgresStore({ pool, table, keyPrefix: randomName('cap') });
    const key = newKey();
    const won = await store.acquire(
      acquireInput(key, { leaseMs: Number.MAX_SAFE_INTEGER, retentionMs: Number.MAX_SAFE_INTEGER }),
    );
    expect(won).toMatchObject({ kind: 'acquired', leaseUntil: Number.MAX_SAFE_INTEGER });
    expect((await store.get(key))?.expiresAt).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('SQLSTATE 53100 (disk full) on acquire is StoreFullError; elsewhere StoreUnavailableError, cause kept', async () => {
    const diskFull = Object.assign(new Error('could not extend file'), { code: '53100' });
    // The driver's answer as node-postgres gives it; the classification is what is tested.
    const failing: Queryable = { query: () => Promise.reject(diskFull) };
    const failure = (operation: string) =>
      runStatement(failing, operation, { text: 'SELECT 1' }, 1_000).then(
        () => undefined,
        (error: unknown) => error as Error,
      );
    const full = await failure('acquire');
    expect(full).toBeInstanceOf(StoreFullError);
    expect(full?.cause).toBe(diskFull);
    const other = await failure('complete');
    expect(other).toBeInstanceOf(StoreUnavailableError);
    expect(other?.cause).toBe(diskFull);
  });
});

describe('an operation that ends the transaction itself (documented misuse)', () => {
  // OPEN (wt/pgrev): the README says never to send COMMIT on `tx`. If an operation does, its
  // rows are committed while the record is still in progress; completeIn then refuses the
  // idle client, the settling releases the key and the caller is told "nothing was
  // recorded" (TransactionNotCommittedError), so a retry writes the rows a second time. A
  // guard would refuse transaction control on `tx` (a wrapped client) or, seeing the client
  // idle after the operation, leave the key to its lease instead of releasing it.
  it.fails('a COMMIT sent by the operation does not lead to a second business row', async () => {
    const store = createPostgresStore({ pool, table, keyPrefix: randomName('selfcommit') });
    const engine = createPostgresIdempotency<string>({ store, heartbeatMs: false });
    const scope = randomName('scope');
    const op = async ({ tx, fence }: { tx: pg.PoolClient; fence: number }) => {
      await tx.query(`INSERT INTO ${charges} (scope, fence) VALUES ($1, $2)`, [scope, fence]);
      await tx.query('COMMIT');
      return 'done';
    };
    for (let attempt = 0; attempt < 2; attempt++)
      await engine.execute({ key: 'k', scope }, op).catch(() => {});
    expect((await rowsOf(scope)).length).toBeLessThanOrEqual(1);
  });
});
