import { setTimeout as sleep } from 'node:timers/promises';
import { guardStoreCall, type StoreErrorRules } from '@idem/core';
import type { QueryConfig, QueryResult, QueryResultRow } from 'pg';

/**
 * What the store sends statements through: a `pg.Pool` (recommended), a `pg.Client` or a
 * checked-out `PoolClient`. Only `query(config)` is used.
 */
export interface Queryable {
  query<R extends QueryResultRow = QueryResultRow>(config: QueryConfig): Promise<QueryResult<R>>;
}

// SQLSTATEs that mean the store's table or functions are not there.
const MISSING_SCHEMA = new Set(['42P01', '42883', '3F000']);

function describe(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string' ? `${error.message} (${code})` : error.message;
  }
  return String(error);
}

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
      ? ' (the store schema is missing: run store.ensureSchema() or apply sql/schema.sql)'
      : '';
  },
};

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
  return guardStoreCall(
    POSTGRES_ERRORS,
    operation,
    () => target.query<R>({ ...config, query_timeout: timeoutMs } as QueryConfig),
    { timeoutMs },
  );
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
