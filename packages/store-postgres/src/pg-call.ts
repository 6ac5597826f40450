import { setTimeout as sleep } from 'node:timers/promises';
import {
  errorMessage,
  guardStoreCall,
  type StoreErrorRules,
  StoreUnavailableError,
} from '@idem/core';
import type { QueryConfig, QueryResult, QueryResultRow } from 'pg';
import { poolBlocked, trackWaiter } from './abandoned-waiters.js';

/**
 * What the store sends statements through: a `pg.Pool` (recommended), a `pg.Client` or a
 * checked-out `PoolClient`. Only `query(config)` is used.
 */
export interface Queryable {
  query<R extends QueryResultRow = QueryResultRow>(config: QueryConfig): Promise<QueryResult<R>>;
}

// SQLSTATEs that mean the store's table or functions are not there, or a column of this
// version is not (42703: a table created before origins, its schema not run again).
const MISSING_SCHEMA = new Set(['42P01', '42883', '3F000', '42703']);

function describe(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string' ? `${error.message} (${code})` : error.message;
  }
  return String(error);
}

/**
 * What node-postgres answers on a `pg.Client` whose connection was lost or ended: it never
 * connects again, so every later call fails the same way, whatever the server does.
 */
const DEAD_CLIENT = /^Client (has encountered a connection error|was closed) and is not queryable$/;
const DEAD_CLIENT_HINT =
  ' (a pg.Client never reconnects: every call fails until it is replaced; give the store a pg.Pool, which opens new connections once the server is back)';

const codeOf = (error: unknown): unknown => (error as { code?: unknown } | null)?.code;

/**
 * Every failure of a statement becomes a typed error with the driver's error as `cause`:
 * `StoreUnavailableError`, or `StoreFullError` for an acquisition the server refused for
 * lack of disk (SQLSTATE 53100). idem's own errors pass through.
 */
const POSTGRES_ERRORS: StoreErrorRules = {
  service: 'PostgreSQL',
  describe,
  isFull: (error, operation) => operation === 'acquire' && codeOf(error) === '53100',
  hint: (error) => {
    const code = codeOf(error);
    return typeof code === 'string' && MISSING_SCHEMA.has(code)
      ? ' (the store schema is missing or of an earlier version: run store.ensureSchema() or apply sql/schema.sql)'
      : '';
  },
};

/**
 * The same for a `pg.Client` given as the store's `pool`, the one case where a lost
 * connection is for good: the remedy is named. Not for a client checked out of a pool (a
 * transaction's, `completeIn`'s, the engine's), nor through a pool: there the store has a
 * pool, and telling to give it one was wrong (the rev31b review).
 */
const CLIENT_ERRORS: StoreErrorRules = {
  ...POSTGRES_ERRORS,
  hint: (error) =>
    POSTGRES_ERRORS.hint?.(error) ||
    (DEAD_CLIENT.test(errorMessage(error)) ? DEAD_CLIENT_HINT : ''),
};

/** A client checked out of a pool: pg-pool gives it a `release`; a plain `pg.Client` has none. */
const checkedOut = (target: Queryable): boolean =>
  typeof (target as { release?: unknown }).release === 'function';

/**
 * Sends one statement and waits at most `timeoutMs` for its answer, counted from the call:
 * waiting for a pool connection included, which node-postgres itself does not bound unless
 * the pool has `connectionTimeoutMillis`. The statement also carries `query_timeout`, so that
 * node-postgres drops a connection that stays silent past it (a `Pool` then replaces it).
 * A statement that timed out may still be applied by the server: every write is
 * owner-checked and a repeat is recognised, as the store contract asks.
 */
export function runStatement<R extends QueryResultRow>(
  target: Queryable,
  operation: string,
  config: QueryConfig,
  timeoutMs: number,
): Promise<QueryResult<R>> {
  const statement = { ...config, query_timeout: timeoutMs } as QueryConfig;
  if (!isPool(target))
    return guardStoreCall(
      checkedOut(target) ? POSTGRES_ERRORS : CLIENT_ERRORS,
      operation,
      () => target.query<R>(statement),
      { timeoutMs },
    );
  // Through a pool: the connection is taken here rather than by `pool.query`, so that a
  // statement whose caller stopped waiting (the time limit passed while every connection was
  // busy, or the server silent) is never sent once a connection frees up, and its failure
  // says it was not sent (`unsent`). Core gives back every acquire that may have been
  // applied, at most 64 at once: during an outage, those of acquires that only waited for a
  // connection filled that bound, and an acquire a resumed server did apply was left holding
  // its key for a whole lease (seen with the server frozen 8 s: keys no handler ran for
  // answered 409 for 30 s).
  const blocked = poolBlocked(target);
  if (blocked)
    return Promise.reject(
      new StoreUnavailableError(`PostgreSQL ${operation} failed: not sent: ${blocked}`, {
        unsent: true,
      }),
    );
  let phase: 'waiting' | 'sent' | 'abandoned' = 'waiting';
  const waiter = trackWaiter(target);
  const run = async (): Promise<QueryResult<R>> => {
    let client: PoolClientLike;
    try {
      client = await target.connect();
    } finally {
      waiter.settled();
    }
    if (phase === 'abandoned') {
      client.release();
      throw new Error('not sent: its caller stopped waiting');
    }
    phase = 'sent';
    // As `pool.query` does: a connection that breaks while checked out emits 'error' on it
    // (with no listener, the process ends); a failed statement's connection is dropped.
    let released = false;
    const release = (error?: Error) => {
      if (released) return;
      released = true;
      client.removeListener('error', onError);
      client.release(error);
    };
    const onError = (error: Error) => release(error);
    client.once('error', onError);
    try {
      const result = await client.query<R>(statement);
      release();
      return result;
    } catch (error) {
      release(error instanceof Error ? error : new Error(String(error)));
      throw error;
    }
  };
  return guardStoreCall(POSTGRES_ERRORS, operation, run, { timeoutMs }).catch((error: unknown) => {
    if (phase !== 'waiting') throw error;
    phase = 'abandoned';
    waiter.abandon();
    throw error instanceof StoreUnavailableError && !error.unsent
      ? new StoreUnavailableError(`${error.message} (not sent: no connection was free)`, {
          cause: error.cause,
          unsent: true,
        })
      : error;
  });
}

/** The pool's side used here: a connection checked out and given back (a `pg.Pool`). */
interface PoolLike extends Queryable {
  connect(): Promise<PoolClientLike>;
}
interface PoolClientLike extends Queryable {
  release(error?: Error | boolean): void;
  once(event: 'error', listener: (error: Error) => void): unknown;
  removeListener(event: 'error', listener: (error: Error) => void): unknown;
}

/**
 * A `pg.Pool` used as node-postgres made it: not a `Client` nor a checked-out `PoolClient`
 * (whose `connect` is another thing), and not a pool whose `query` was wrapped (on the
 * instance, or by a subclass: metrics, tracing, a test's counter) or its `connect`, which is
 * used through its `query` as given. The `query` and `connect` in force must both come from
 * the class that defines `totalCount` (pg-pool's `Pool`).
 */
function isPool(target: Queryable): target is PoolLike {
  const t = target as Partial<PoolLike> & { waitingCount?: unknown; totalCount?: unknown };
  if (
    typeof t.connect !== 'function' ||
    typeof t.waitingCount !== 'number' ||
    typeof t.totalCount !== 'number'
  )
    return false;
  for (let o: object | null = target; o !== null; o = Object.getPrototypeOf(o)) {
    const query = Object.hasOwn(o, 'query');
    const connect = Object.hasOwn(o, 'connect');
    if (query || connect) return query && connect && Object.hasOwn(o, 'totalCount');
  }
  return false;
}

/** SQLSTATEs after which the server rolled the statement's transaction back: a new one may succeed. */
const RETRIABLE = new Set(['40001', '40P01']);
/** Most tries of one store step that keeps meeting serialization failures or deadlocks. */
const MAX_TRIES = 8;

function sqlState(error: unknown): unknown {
  return ((error as { cause?: { code?: unknown } } | null)?.cause as { code?: unknown } | undefined)
    ?.code;
}

/**
 * `runStatement` for a store step sent as its own implicit transaction (through the pool):
 * a serialization failure (40001) or a deadlock (40P01) means the server rolled the
 * statement back, so it is sent again, a new transaction with a fresh snapshot, after a short
 * random pause, at most {@link MAX_TRIES} times and all within `timeoutMs` from the call.
 * This is what keeps every step correct when the sessions default to `repeatable read` or
 * `serializable` (`default_transaction_isolation`): the functions then see one snapshot for
 * the whole statement, and a row another call changed meanwhile fails the statement instead
 * of being read again. In the normal case it is one round trip, as before.
 *
 * Never for a statement inside a transaction block (`completeIn`): the failure aborted that
 * whole transaction, which only its owner can retry.
 */
export async function runStep<R extends QueryResultRow>(
  target: Queryable,
  operation: string,
  config: QueryConfig,
  timeoutMs: number,
): Promise<QueryResult<R>> {
  const deadline = performance.now() + timeoutMs;
  for (let tries = 1; ; tries++) {
    const left = Math.max(1, Math.floor(deadline - performance.now()));
    try {
      return await runStatement<R>(target, operation, config, left);
    } catch (error) {
      const pause = Math.random() * 2 ** tries;
      if (
        !RETRIABLE.has(sqlState(error) as string) ||
        tries >= MAX_TRIES ||
        performance.now() + pause >= deadline
      )
        throw error;
      await sleep(pause);
    }
  }
}
