import type { PoolConfig } from 'pg';
import { positiveMs } from './input-checks.js';

/** Options of {@link recommendedPoolConfig}. */
export interface RecommendedPoolConfigInput {
  /**
   * Server-side limit of one statement (`statement_timeout`) and of a wait for a lock
   * (`lock_timeout`), and the client-side `query_timeout` and `connectionTimeoutMillis`.
   * Keep it at or below the store's `statementTimeoutMs` and below core's `storeTimeoutMs`.
   * Statements of your own transactional operations obey it too: raise it per transaction
   * with `SET LOCAL statement_timeout` if one needs longer.
   * @default 2_000
   */
  statementTimeoutMs?: number;
  /**
   * Server-side limit of a transaction that sits idle (`idle_in_transaction_session_timeout`):
   * a process that froze or lost its connection in the middle of a transactional operation
   * lets go of its row locks after this long.
   * @default 60_000
   */
  idleInTransactionTimeoutMs?: number;
}

/**
 * node-postgres pool settings for an idem store: spread them into
 * `new Pool({ connectionString, ...recommendedPoolConfig(), ...yours })`.
 *
 * With them, a statement MUST end within `statementTimeoutMs` on the server (the server
 * cancels it) and on the client (node-postgres gives up and the pool drops the connection);
 * waiting for a free connection and opening one are bounded the same way; a transaction left
 * idle by a frozen or disconnected process is ended by the server; TCP keep-alive notices a
 * dead peer. A `Pool` opens a new connection for the next call after one broke, so an outage
 * ends by itself once the server is back.
 */
export function recommendedPoolConfig(input: RecommendedPoolConfigInput = {}): PoolConfig {
  const timeout = positiveMs('statementTimeoutMs', input.statementTimeoutMs ?? 2_000);
  const idle = positiveMs('idleInTransactionTimeoutMs', input.idleInTransactionTimeoutMs ?? 60_000);
  return {
    statement_timeout: timeout,
    lock_timeout: timeout,
    query_timeout: timeout,
    idle_in_transaction_session_timeout: idle,
    connectionTimeoutMillis: timeout,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
  };
}
