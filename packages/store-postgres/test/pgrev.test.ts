import {
  deriveStorageKey,
  InvalidInputError,
  OutcomeNotRecordedError,
  OutcomeTooLargeError,
  ReplayedFailureError,
  StoreFullError,
  StoreUnavailableError,
} from '@idem/core';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import {
  createPostgresIdempotency,
  createPostgresStore,
  TRANSACTION_ENDED_WARNING,
  TransactionEndedByOperationError,
  TransactionNotCommittedError,
} from '../src/index.js';
import { type Queryable, runStatement } from '../src/pg-call.js';
import { traceConnections } from './counted-pool.js';
import { acquireInput, HOUR, makePool, newKey, randomName, sleep } from './pg-env.js';

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
  // Was (wt/pgrev, it.fails): an operation that sent COMMIT on `tx` committed its rows while
  // the record was still in progress; completeIn then refused the idle client, the settling
  // released the key and the caller was told "nothing was recorded"
  // (TransactionNotCommittedError), so a retry wrote the rows a second time.
  type Tx = pg.PoolClient;
  /** Statements sent on the pool's connections (the business transaction's among them). */
  const traced = makePool({ max: 4 });
  const onConnections = traceConnections(traced, (text) =>
    text.startsWith('BEGIN ') ? 'BEGIN+lock' : text,
  );

  const warnings: string[] = [];
  const onWarning = (warning: Error & { code?: string }) => {
    if (warning.code === TRANSACTION_ENDED_WARNING) warnings.push(warning.message);
  };
  beforeAll(() => {
    process.on('warning', onWarning);
  });
  afterAll(async () => {
    process.off('warning', onWarning);
    await traced.end();
  });

  const setup = (extra: { leaseMs?: number; heartbeatMs?: number | false } = {}) => {
    const store = createPostgresStore({ pool: traced, table, keyPrefix: randomName('selfend') });
    const engine = createPostgresIdempotency<string>({ store, heartbeatMs: false, ...extra });
    const scope = randomName('scope');
    const runs = { n: 0 };
    const insert = (tx: Tx, fence: number) =>
      tx.query(`INSERT INTO ${charges} (scope, fence) VALUES ($1, $2)`, [scope, fence]);
    /** Runs `body` as the operation (counted) and answers what the caller was told. */
    const call = (body: (tx: Tx, fence: number) => Promise<string>) =>
      engine
        .execute({ key: 'k', scope }, async ({ tx, fence }) => {
          runs.n++;
          return body(tx, fence);
        })
        .then(
          (result) => ({ told: 'value' as const, ...result }),
          (error: unknown) => ({ told: 'error' as const, error: error as Error }),
        );
    const status = async () => (await store.get(deriveStorageKey(scope, 'k')))?.status;
    return { store, scope, runs, insert, call, status };
  };

  /** The key was given back with nothing committed: a retry runs and writes the one row. */
  const releasedThenRetryRuns = async (t: ReturnType<typeof setup>) => {
    expect(await t.status()).toBe('released');
    expect(await rowsOf(t.scope)).toHaveLength(0);
    const retry = await t.call(async (tx, fence) => {
      await t.insert(tx, fence);
      return 'again';
    });
    expect(retry).toMatchObject({ told: 'value', value: 'again', replayed: false });
    expect(await rowsOf(t.scope)).toHaveLength(1);
  };

  /**
   * What an operation sends on `tx`, in order: `row` inserts one business row, `row; COMMIT`
   * inserts one in the same text as a COMMIT, `{ caught }` is a statement whose error the
   * operation catches, anything else a statement sent as it is.
   */
  type Step = 'row' | 'row; COMMIT' | { caught: string } | string;
  const send = async (t: ReturnType<typeof setup>, tx: Tx, fence: number, steps: Step[]) => {
    for (const step of steps) {
      if (step === 'row') await t.insert(tx, fence);
      else if (step === 'row; COMMIT')
        await tx.query(
          `INSERT INTO ${charges} (scope, fence) VALUES ('${t.scope}', ${fence}); COMMIT`,
        );
      else if (typeof step === 'object') await tx.query(step.caught).catch(() => {});
      else await tx.query(step);
    }
  };

  const returning: Array<[string, Step[], number]> = [
    ['COMMIT', ['row', 'COMMIT'], 1],
    ['END', ['row', 'END'], 1],
    ['COMMIT AND CHAIN', ['row', 'COMMIT AND CHAIN'], 1],
    ['a text of several statements: INSERT ...; COMMIT', ['row; COMMIT'], 1],
    ['COMMIT; BEGIN, then a second row', ['row', 'COMMIT; BEGIN', 'row'], 2],
    ['COMMIT AND CHAIN, then a second row', ['row', 'COMMIT AND CHAIN', 'row'], 2],
    ['ROLLBACK', ['row', 'ROLLBACK'], 0],
    ['ABORT', ['row', 'ABORT'], 0],
    ['ROLLBACK, then a row in autocommit', ['row', 'ROLLBACK', 'row'], 1],
    [
      'PREPARE TRANSACTION (refused by a server without prepared transactions, error caught)',
      ['row', { caught: "PREPARE TRANSACTION 'idem_p'" }],
      0,
    ],
    [
      'COMMIT; BEGIN, then a failed statement caught',
      ['row', 'COMMIT; BEGIN', { caught: 'SELECT 1/0' }],
      1,
    ],
  ];

  for (const [name, body, rows] of returning)
    it(`${name}, then returns: the value is recorded once, a retry replays it (rows: ${rows})`, async () => {
      const t = setup();
      warnings.length = 0;
      const first = await t.call(async (tx, fence) => {
        await send(t, tx, fence, body);
        return 'done';
      });
      expect(first).toMatchObject({ told: 'value', value: 'done', replayed: false });
      expect(await t.status()).toBe('completed');
      const retry = await t.call(async (tx, fence) => {
        await t.insert(tx, fence);
        return 'again';
      });
      expect(retry).toMatchObject({ told: 'value', value: 'done', replayed: true });
      expect(t.runs.n).toBe(1);
      expect(await rowsOf(t.scope)).toHaveLength(rows);
      await vi.waitFor(() => expect(warnings).toHaveLength(1), { timeout: 5_000 });
    });

  const throwing: Array<[string, Step[], number]> = [
    ['COMMIT', ['row', 'COMMIT'], 1],
    ['COMMIT; BEGIN and a second row', ['row', 'COMMIT; BEGIN', 'row'], 1],
    ['COMMIT; BEGIN and a failed statement', ['row', 'COMMIT; BEGIN', { caught: 'SELECT 1/0' }], 1],
    ['ROLLBACK (later autocommit writes cannot be ruled out)', ['row', 'ROLLBACK'], 0],
  ];

  for (const [name, body, rows] of throwing)
    it(`${name}, then throws: the failure is final, never released for a second run (rows: ${rows})`, async () => {
      const t = setup();
      const declined = new Error('declined after commit');
      const first = await t.call(async (tx, fence) => {
        await send(t, tx, fence, body);
        throw declined;
      });
      expect(first.told).toBe('error');
      const error = (first as { error: Error }).error;
      expect(error).toBeInstanceOf(TransactionEndedByOperationError);
      expect(error.cause).toBe(declined);
      expect(await t.status()).toBe('completed');
      const retry = await t.call(async (tx, fence) => {
        await t.insert(tx, fence);
        return 'again';
      });
      expect(retry.told).toBe('error');
      const replayed = (retry as { error: Error }).error;
      expect(replayed).toBeInstanceOf(ReplayedFailureError);
      expect((replayed as ReplayedFailureError).stored.code).toBe('TRANSACTION_ENDED_BY_OPERATION');
      expect(t.runs.n).toBe(1);
      expect(await rowsOf(t.scope)).toHaveLength(rows);
    });

  it('a normal operation: atomic, no warning, the same round trips (the completion checks the transaction id)', async () => {
    const t = setup();
    warnings.length = 0;
    onConnections.length = 0;
    const first = await t.call(async (tx, fence) => {
      await t.insert(tx, fence);
      return 'done';
    });
    expect(first).toMatchObject({ told: 'value', value: 'done', replayed: false });
    expect(onConnections.splice(0)).toEqual([
      'acquire',
      'BEGIN+lock',
      `INSERT INTO ${charges} (scope, fence) VALUES ($1, $2)`,
      'completeInTx',
      'COMMIT',
    ]);
    expect(await rowsOf(t.scope)).toHaveLength(1);
    expect((await t.call(async () => 'again')).told).toBe('value');
    expect(t.runs.n).toBe(1);
    await sleep(50);
    expect(warnings).toEqual([]);
  });

  it('an operation that throws (no misuse): rolled back in one round trip, released, a retry runs once more', async () => {
    const t = setup();
    onConnections.length = 0;
    const first = await t.call(async (tx, fence) => {
      await t.insert(tx, fence);
      throw new Error('declined');
    });
    expect((first as { error: Error }).error.message).toBe('declined');
    const sent = onConnections.splice(0);
    expect(sent.slice(0, 3)).toEqual([
      'acquire',
      'BEGIN+lock',
      `INSERT INTO ${charges} (scope, fence) VALUES ($1, $2)`,
    ]);
    expect(sent[3]).toMatch(/^SELECT txid_current_if_assigned\(\) .*; ROLLBACK$/);
    expect(sent.slice(4)).toEqual(['release']);
    await releasedThenRetryRuns(t);
  });

  it('a failed statement of its own (no misuse), thrown or caught: nothing commits, released, a retry runs', async () => {
    for (const caught of [false, true]) {
      const t = setup();
      const first = await t.call(async (tx, fence) => {
        await t.insert(tx, fence);
        const failed = tx.query('SELECT 1/0');
        if (!caught) await failed;
        await failed.catch(() => {});
        return 'done';
      });
      expect(first.told).toBe('error');
      const error = (first as { error: Error }).error;
      if (caught) expect(error).toBeInstanceOf(TransactionNotCommittedError);
      else expect(error.message).toMatch(/division by zero/);
      await releasedThenRetryRuns(t);
    }
  });

  it('a failed statement while node-postgres still reports the block as open (its error read before ReadyForQuery): still its own failure, released', async () => {
    // Seen under serializable (1 run in 5): the operation's statement failed with 40001, the
    // client still said 'T', the id check sent in the failed block failed (25P02), and the
    // failure was taken for a transaction the operation had ended.
    const t = setup();
    let client: Tx | undefined;
    const first = await t.call(async (tx, fence) => {
      client = tx;
      await t.insert(tx, fence);
      await tx.query('SELECT 1/0').catch(() => {});
      (tx as unknown as { getTransactionStatus: () => string }).getTransactionStatus = () => 'T';
      throw new Error('declined');
    });
    delete (client as unknown as { getTransactionStatus?: unknown }).getTransactionStatus;
    expect((first as { error: Error }).error.message).toBe('declined');
    await releasedThenRetryRuns(t);
  });

  it('after its own COMMIT, heartbeats renew the lease again: a duplicate past the first lease gets IN_PROGRESS, not a second run', async () => {
    // Before: heartbeats wrote nothing while the row was "held" (it was not: COMMIT freed
    // it), so the stored lease passed and a duplicate took the key over and ran again.
    const t = setup({ leaseMs: 3_000, heartbeatMs: 500 });
    let committed!: () => void;
    const afterCommit = new Promise<void>((resolve) => {
      committed = resolve;
    });
    const first = t.call(async (tx, fence) => {
      await t.insert(tx, fence);
      await tx.query('COMMIT');
      committed();
      await sleep(5_000);
      return 'done';
    });
    await afterCommit;
    await sleep(4_000);
    const duplicate = await t.call(async (tx, fence) => {
      await t.insert(tx, fence);
      return 'again';
    });
    expect(duplicate.told).toBe('error');
    expect((duplicate as { error: { code?: string } }).error.code).toBe('IN_PROGRESS');
    expect(await first).toMatchObject({ told: 'value', value: 'done', replayed: false });
    expect(t.runs.n).toBe(1);
    expect(await rowsOf(t.scope)).toHaveLength(1);
  }, 20_000);
});
