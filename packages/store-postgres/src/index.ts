export {
  CommitOutcomeUnknownError,
  TRANSACTION_ENDED_WARNING,
  TransactionEndedByOperationError,
  TransactionNotCommittedError,
} from './business-transaction.js';
export type { DeleteExpiredOptions, PostgresStore, PostgresStoreOptions } from './options.js';
export type { Queryable } from './pg-call.js';
export type { RecommendedPoolConfigInput } from './pool-config.js';
export { recommendedPoolConfig } from './pool-config.js';
export { createPostgresStore } from './postgres-store.js';
export { schemaSql } from './schema-export.js';
export type {
  IsolationLevel,
  PostgresIdempotency,
  PostgresIdempotencyOptions,
  TransactionContext,
} from './transactional-engine.js';
export { createPostgresIdempotency } from './transactional-engine.js';
