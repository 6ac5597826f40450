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

const sqlState = (error: unknown): unknown => (error as { code?: unknown } | null)?.code;

/**
 * Every failure of a statement becomes a typed error with the driver's error as `cause`:
 * `StoreUnavailableError`, or `StoreFullError` for an acquisition the server refused for
 * lack of disk (SQLSTATE 53100). idem's own errors pass through.
 */
const POSTGRES_ERRORS: StoreErrorRules = {
  service: 'PostgreSQL',
  describe,
  isFull: (error, operation) => operation === 'acquire' && sqlState(error) === '53100',
  hint: (error) => {
    const code = sqlState(error);
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
