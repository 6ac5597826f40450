import type {
  CompleteInput,
  ExtendInput,
  IdempotencyStore,
  OwnerWriteResult,
  StoreAdmin,
} from '@idem/core';
import type { Queryable } from './pg-call.js';

/** Options of `createPostgresStore`. Durations are milliseconds. */
export interface PostgresStoreOptions {
  /**
   * Where statements go: a `pg.Pool` you built and own (recommended: a pool replaces broken
   * connections, so an outage ends by itself; see `recommendedPoolConfig`). A single
   * `pg.Client` works for the store too, but a client whose connection broke never comes
   * back, and the transactional engine needs a pool. The store never ends it.
   */
  pool: Queryable;
  /**
   * The records table, `name` or `schema.name`, lower-case identifiers. `ensureSchema()`
   * creates it (and its index and functions), or apply `sql/schema.sql`.
   * @default 'idem_records'
   */
  table?: string;
  /** Prepended to every storage key, e.g. to share one table between services. @default '' */
  keyPrefix?: string;
  /**
   * Largest encoded outcome accepted, in bytes; a larger one fails with
   * `OutcomeTooLargeError` before anything is sent. (`bytea` holds up to 1 GB, but every
   * replay sends the outcome over the wire and through the server's memory.)
   * @default 16_777_216 (16 MiB)
   */
  maxOutcomeBytes?: number;
  /**
   * Longest wait for one statement's answer, in ms, counted from the call (waiting for a
   * pool connection included). Past it the call fails with `StoreUnavailableError`, and the
   * statement's `query_timeout` makes node-postgres drop the connection. Keep it below
   * core's `storeTimeoutMs` (5 s), and set a server-side `statement_timeout` as well
   * (`recommendedPoolConfig` does) so the server stops waiting too.
   * @default 2_000
   */
  statementTimeoutMs?: number;
  /**
   * Send the store's statements as named prepared statements (parsed and planned once per
   * connection). Turn it off behind a pooler that cannot keep them (PgBouncer in transaction
   * mode before 1.21). @default true
   */
  preparedStatements?: boolean;
}

/** Options of {@link PostgresStore.deleteExpired}. */
export interface DeleteExpiredOptions {
  /**
   * Keep records this long after they expired, in ms. An expired record still holds its
   * key's last fence: an acquisition within this time continues from it (fence + 1) instead
   * of restarting at 1. @default 86_400_000 (24 h)
   */
  graceMs?: number;
  /** Most rows deleted by this call (one statement). @default 1_000 */
  limit?: number;
}

/** A PostgreSQL-backed store; see `createPostgresStore`. */
export interface PostgresStore extends IdempotencyStore {
  /** The records table, as given (`idem_records` or `schema.idem_records`). */
  readonly table: string;
  /** The pool (or client) the store sends its statements through. */
  readonly pool: Queryable;
  /** Longest wait for one statement's answer, in ms. */
  readonly statementTimeoutMs: number;
  /** The `key` column value that holds `storageKey` (the key prefix prepended). */
  rowKey(storageKey: string): string;
  /** Operator actions, one statement each; `delete` leaves a tombstone that keeps the fence. */
  readonly admin: StoreAdmin;
  /**
   * Creates the table, its index and its functions when missing, and replaces the
   * functions with this version's (`CREATE OR REPLACE`). Safe to run from several processes
   * at once (an advisory lock serialises them). Never called by the factory.
   */
  ensureSchema(): Promise<void>;
  /**
   * Deletes records whose retention passed more than `graceMs` ago (for the tombstone of an
   * `admin.delete`, the deleted record's retention), at most `limit` of them,
   * in one statement (an index range scan on `expires_at`; rows another call holds are
   * skipped). Answers how many it deleted: call it again while that equals `limit`.
   * Expiry never depends on it; it only frees space.
   */
  deleteExpired(options?: DeleteExpiredOptions): Promise<number>;
  /**
   * The owner-checked `complete`, sent on `client`, which MUST be inside a transaction
   * block (`BEGIN` was sent on it): the completion then commits or rolls back with that
   * transaction. Refused with `InvalidInputError`, nothing sent, when node-postgres reports
   * the client idle or its transaction failed (`getTransactionStatus()`, where the installed pg has it),
   * since the record would then commit on its own. Same answers as `complete`; holds the
   * record's row lock until that transaction ends.
   */
  completeIn(client: Queryable, input: CompleteInput): Promise<OwnerWriteResult>;
  /**
   * The transactional engine's completion (internal; use `completeIn`): as `completeIn`, in
   * the same one statement, but applied only while `client` is still inside the transaction
   * whose `txid_current()` was `transactionId`. Answers `'other_transaction'`, nothing
   * written, when it is not (the operation ended that transaction itself: a `COMMIT`,
   * `ROLLBACK`, `COMMIT AND CHAIN` or `COMMIT; BEGIN` sent on its client).
   */
  completeInTransaction(
    client: Queryable,
    input: CompleteInput,
    transactionId: string,
  ): Promise<OwnerWriteResult | 'other_transaction'>;
  /**
   * The transactional engine's heartbeat while its business transaction holds the record's
   * row (internal): renews, through the pool, the lease a takeover honours besides the
   * record's own (which the locked row keeps from being renewed), while the record is still
   * the acquisition `fence` of `input.owner`. Answers the new deadline, or undefined when the
   * record is another's. Throws the store's typed error when the server does not answer.
   * Sent on `via` (a connection outside any transaction block; the engine's own renewal
   * connection), else through the pool.
   */
  renewHeld(input: ExtendInput, fence: number, via?: Queryable): Promise<number | undefined>;
  /**
   * `extend` sent on `via` (internal): the transactional engine's heartbeat outside a held
   * row goes through the pool as it always did, while the store's own `extend` renews on its
   * renewal route (see `extend`).
   */
  extendVia(input: ExtendInput, via: Queryable): Promise<OwnerWriteResult>;
}
