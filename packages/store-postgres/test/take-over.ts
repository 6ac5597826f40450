import { InProgressError, StoreUnavailableError } from '@idem/core';
import pg from 'pg';
import { expect } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { makePool, randomName, sleep } from './pg-env.js';

const PgPool = pg.Pool;

/** What the transactional engine's `execute` needs of the tests' engines here. */
interface Engine {
  execute(
    request: { key: string; scope: string },
    operation: (ctx: { tx: pg.PoolClient; fence: number }) => Promise<string>,
  ): Promise<{ value: string }>;
}

/**
 * Calls `engine.execute` with `operation` until it runs (the key taken over), every `pauseMs`
 * after a 409 (any other error fails the test), for at most `limitMs`; the value, or
 * undefined when it never ran. Returns the number of 409s too.
 */
export async function untilTakenOver(
  engine: Engine,
  request: { key: string; scope: string },
  operation: (ctx: { tx: pg.PoolClient; fence: number }) => Promise<string>,
  { limitMs, pauseMs }: { limitMs: number; pauseMs: number },
): Promise<{ value: string | undefined; conflicts: number }> {
  const started = performance.now();
  let conflicts = 0;
  while (performance.now() - started < limitMs) {
    try {
      return { value: (await engine.execute(request, operation)).value, conflicts };
    } catch (error) {
      expect(error).toBeInstanceOf(InProgressError);
      conflicts++;
      await sleep(pauseMs);
    }
  }
  return { value: undefined, conflicts };
}

/** Creates (if missing) a table of business rows for {@link insertCharge}. */
export async function createCharges(pool: pg.Pool, table: string): Promise<void> {
  await pool.query(`CREATE TABLE IF NOT EXISTS ${table} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
}

/** Inserts one business row of `scope` with `fence` in `table` through `tx`. */
export async function insertCharge(
  tx: pg.PoolClient,
  table: string,
  scope: string,
  fence: number,
): Promise<string> {
  const { rows } = await tx.query(
    `INSERT INTO ${table} (scope, fence) VALUES ($1, $2) RETURNING id`,
    [scope, fence],
  );
  return String(rows[0].id);
}

/**
 * Starts an execution under `scope` whose operation runs `inside` (with the transaction, the
 * fence and the signal) and then never comes back; resolves with its key once `inside` ran,
 * i.e. once the transaction holds the record. An owner whose transaction could not start
 * (short statement limits on a loaded machine: `StoreUnavailableError`) never holds the row:
 * it starts again under a fresh key (`k1`, `k2`, `k3`), and the third failure is thrown
 * instead of waiting for the test's timeout.
 */
export async function holdForever(
  engine: {
    execute(
      request: { key: string; scope: string },
      operation: (ctx: {
        tx: pg.PoolClient;
        fence: number;
        signal: AbortSignal;
      }) => Promise<string>,
    ): Promise<unknown>;
  },
  scope: string,
  inside: (ctx: { tx: pg.PoolClient; fence: number; signal: AbortSignal }) => Promise<void>,
): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    const key = `k${attempt}`;
    let held!: () => void;
    const holding = new Promise<void>((resolve) => {
      held = resolve;
    });
    const first = engine.execute({ key, scope }, async (ctx) => {
      await inside(ctx);
      held();
      await new Promise(() => {}); // the owner never comes back
      return 'returned';
    });
    first.catch(() => {});
    try {
      await Promise.race([
        holding,
        first.then(
          () => Promise.reject(new Error('the owner returned')),
          (error: unknown) => Promise.reject(error),
        ),
      ]);
      return key;
    } catch (error) {
      if (!(error instanceof StoreUnavailableError) || attempt === 3) throw error;
    }
  }
}

/** What {@link cutOffOwner} needs: where the owner connects, how it is cut off, and limits. */
export interface CutOffScenario {
  /** The owner's connection string (through a proxy that can cut it off). */
  ownerUrl: string;
  /** The owner's pool config beyond its connection. */
  poolConfig?: pg.PoolConfig;
  /** The owner store's statement limit (its heartbeats' renewals are bounded by it). */
  statementTimeoutMs: number;
  engine: { leaseMs: number; heartbeatMs: number; maxHoldMs?: number };
  /** The business table (`id`, `scope`, `fence`) and its schema's record table. */
  charges: string;
  table: string;
  /** A statement the owner sends on `tx` once it holds the record (a proxy's marker). */
  mark?: string;
  /** Cuts the owner off, once it holds its record. */
  cutOff: () => Promise<void>;
  /** Pause between the duplicate's tries (default 50 ms). */
  pauseMs?: number;
  /**
   * The cut leaves the owner's pool answering (only its transaction's connection falls
   * silent): the owner keeps renewing its held lease, so the duplicate must get 409 for this
   * long, and nothing commits (the server ends the silent transaction at its idle limit).
   */
  noTakeoverForMs?: number;
}

/**
 * An owner that holds its record through `ownerUrl` and never comes back, cut off by
 * `cutOff`; a duplicate (its own direct pool) retried until it takes the key over, within
 * 15 s. Resolves with when the owner's signal aborted (undefined: not yet), when the
 * duplicate's operation ran and when the cut began (`performance.now()`), after checking
 * that one business row committed: the duplicate's.
 */
export async function cutOffOwner(
  s: CutOffScenario,
): Promise<{ abortedAt: () => number | undefined; tookOverAt: number; cutAt: number }> {
  const ownerPool = new PgPool({ connectionString: s.ownerUrl, max: 4, ...s.poolConfig });
  ownerPool.on('error', () => {});
  const dupPool = makePool({ max: 4 });
  const keyPrefix = randomName('cut');
  const scope = randomName('scope');
  const owner = createPostgresIdempotency<string>({
    store: createPostgresStore({
      pool: ownerPool,
      table: s.table,
      keyPrefix,
      statementTimeoutMs: s.statementTimeoutMs,
    }),
    ...s.engine,
  });
  const duplicates = createPostgresIdempotency<string>({
    store: createPostgresStore({ pool: dupPool, table: s.table, keyPrefix }),
    ...s.engine,
  });
  let abortedAt: number | undefined;
  try {
    const key = await holdForever(owner, scope, async ({ tx, fence, signal }) => {
      await insertCharge(tx, s.charges, scope, fence);
      if (s.mark !== undefined) await tx.query(s.mark);
      signal.addEventListener('abort', () => {
        abortedAt = performance.now();
      });
    });
    const cutAt = performance.now();
    await s.cutOff();
    if (s.noTakeoverForMs !== undefined) {
      const { value, conflicts } = await untilTakenOver(
        duplicates,
        { key, scope },
        async () => 'duplicate',
        { limitMs: s.noTakeoverForMs, pauseMs: s.pauseMs ?? 50 },
      );
      expect(value, 'a duplicate took over while the owner renewed').toBeUndefined();
      expect(conflicts).toBeGreaterThan(0);
      return { abortedAt: () => abortedAt, tookOverAt: Number.POSITIVE_INFINITY, cutAt };
    }
    let tookOverAt: number | undefined;
    const { value } = await untilTakenOver(
      duplicates,
      { key, scope },
      async ({ tx, fence }) => {
        tookOverAt = performance.now();
        await insertCharge(tx, s.charges, scope, fence);
        return 'duplicate';
      },
      { limitMs: 15_000, pauseMs: s.pauseMs ?? 50 },
    );
    expect(value).toBe('duplicate');
    const { rows } = await dupPool.query(`SELECT fence FROM ${s.charges} WHERE scope = $1`, [
      scope,
    ]);
    expect(rows.map((r) => Number(r.fence))).toEqual([2]);
    return { abortedAt: () => abortedAt, tookOverAt: tookOverAt as number, cutAt };
  } finally {
    await dupPool.end();
    void ownerPool.end().catch(() => {});
  }
}

/**
 * One execution on `pool` (lease 1 s, heartbeats every 200 ms) whose operation inserts its
 * row and then runs one statement of `seconds` (`pg_sleep`, under a raised
 * `statement_timeout`); `check` runs on `tx` first. Resolves with its result and whether its
 * signal aborted (a healthy owner's must not: the server runs its statement).
 */
export async function longStatementOwner(
  pool: pg.Pool,
  s: { table: string; charges: string; seconds: number; isolationLevel?: 'serializable' },
  check?: (tx: pg.PoolClient) => Promise<void>,
): Promise<{ result: unknown; aborted: boolean | undefined }> {
  const scope = randomName('scope');
  const engine = createPostgresIdempotency<string>({
    store: createPostgresStore({
      pool,
      table: s.table,
      keyPrefix: randomName('long'),
      statementTimeoutMs: 500,
    }),
    leaseMs: 1_000,
    heartbeatMs: 200,
    ...(s.isolationLevel ? { isolationLevel: s.isolationLevel } : {}),
  });
  let signal: AbortSignal | undefined;
  const result = await engine.execute({ key: 'k', scope }, async ({ tx, fence, signal: own }) => {
    signal = own;
    await check?.(tx);
    await insertCharge(tx, s.charges, scope, fence);
    await tx.query("SET LOCAL statement_timeout = '30s'");
    await tx.query(`SELECT pg_sleep(${s.seconds})`);
    return 'done';
  });
  return { result, aborted: signal?.aborted };
}
