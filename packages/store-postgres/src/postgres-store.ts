import { createHash } from 'node:crypto';
import {
  type AcquireInput,
  type AcquireResult,
  type CompleteInput,
  checkOutcome,
  checkPositiveInteger,
  type ExtendInput,
  InvalidInputError,
  NOT_OWNER,
  OWNED as OK,
  type OwnerWriteResult,
  type RecordStatus,
  type ReleaseInput,
  type StoreCapabilities,
  type StoredRecord,
  StoreUnavailableError,
} from '@idem/core';
import type { Pool, QueryResult } from 'pg';
import {
  checkFingerprint,
  checkKey,
  checkKeyPrefix,
  checkOwner,
  duration,
  positiveMs,
} from './input-checks.js';
import type { PostgresStore, PostgresStoreOptions } from './options.js';
import { type Queryable, runStatement, runStep } from './pg-call.js';
import { createPostgresAdmin } from './postgres-admin.js';
import { answeredByServer, RenewalConnection } from './renewal-connection.js';
import { NOW_MS, originColumnSql, schemaObjects, schemaSql } from './schema-sql.js';
import { parseTableName, type TableName } from './table-name.js';

const DEFAULT_MAX_OUTCOME_BYTES = 16 * 1024 * 1024;
const DEFAULT_STATEMENT_TIMEOUT_MS = 2_000;
const DEFAULT_GRACE_MS = 86_400_000;

/** A row as node-postgres returns it: `bigint` columns arrive as decimal strings. */
interface RecordRow {
  status: RecordStatus;
  fingerprint: string;
  owner: string;
  fence: string;
  lease_until: string;
  expires_at: string;
  outcome: Buffer | null;
  /** NULL in a row written before origins (its owner counts as its origin). */
  origin?: string | null;
}

interface AcquireRow {
  o_acquired: boolean;
  o_takeover: boolean;
  o_now: string;
  o_status: RecordStatus;
  o_fingerprint: string;
  /** The record's owner in a found answer, its origin in an acquired one (see the schema). */
  o_owner: string | null;
  o_fence: string;
  o_lease_until: string;
  o_expires_at: string;
  o_outcome: Buffer | null;
}

function toRecord(row: RecordRow): StoredRecord {
  const record: StoredRecord = {
    status: row.status,
    fingerprint: row.fingerprint,
    owner: row.owner,
    fence: Number(row.fence),
    leaseUntil: Number(row.lease_until),
    expiresAt: Number(row.expires_at),
  };
  if (row.origin === '') {
    // No store writes one (an acquisition refuses such a row too).
    throw new StoreUnavailableError(
      'PostgreSQL returned a malformed record: an empty origin (not written by a store)',
    );
  }
  if (row.origin != null) record.origin = row.origin;
  if (row.outcome) record.outcome = row.outcome;
  return record;
}

/**
 * The failure of an acquisition answered by the acquire function of a schema older than
 * this version (no origin): the table and functions were not brought up to date. The
 * acquisition was applied (a `StoreUnavailableError` that may have been applied: core gives
 * it back).
 */
function outdatedSchema(name: TableName): StoreUnavailableError {
  return new StoreUnavailableError(
    `PostgreSQL schema of ${name.text} is of an earlier version (its acquire function answers no origin): ` +
      `run store.ensureSchema() once, or apply this version's sql/schema.sql (schemaSql('${name.text}')), ` +
      `which adds the column (${originColumnSql(name)}) and replaces the functions`,
  );
}

/** The bytes of an outcome as a Buffer view (no copy): node-postgres sends Buffers as bytea. */
function outcomeBuffer(value: unknown, maxOutcomeBytes: number): Buffer {
  const outcome = checkOutcome(value, maxOutcomeBytes);
  return Buffer.from(outcome.buffer, outcome.byteOffset, outcome.byteLength);
}

/**
 * Creates an idempotency store on PostgreSQL through a node-postgres pool (or client) the
 * caller owns.
 *
 * Each step is one statement, one round trip, atomic: acquire, complete, release and extend
 * call a PL/pgSQL function of the store's schema (see `schemaSql`) that reads the record
 * under its row lock and decides on the database clock (`clock_timestamp()`,
 * `capabilities.clock = 'server'`); `get` is one `SELECT`. A replay or a conflict takes no
 * lock and writes nothing. Outcomes are `bytea`, byte for byte. Records are kept after they
 * expire (expiry is decided on every call, never by deletion), so fences keep growing over
 * released, taken-over and expired records until `deleteExpired` removes them.
 *
 * A statement delivered twice answers what its first delivery would have (contract rule 7):
 * an acquire that finds the caller's own in-progress record renews its lease and answers
 * `acquired` with the same fence; a complete that finds the record completed by the same
 * owner with the same bytes answers `{ ok: true }`; a release that finds its own tombstone
 * answers `{ ok: true }`.
 *
 * Creates no table and sends nothing until called. Every driver failure is thrown as
 * `StoreUnavailableError` with the driver's error as `cause`; every call is bounded by
 * `statementTimeoutMs`.
 */
export function createPostgresStore(options: PostgresStoreOptions): PostgresStore {
  const { pool } = options;
  if (!pool || typeof (pool as { query?: unknown }).query !== 'function')
    throw new InvalidInputError('createPostgresStore needs a pg Pool (or Client) as `pool`');
  const name = parseTableName(options.table ?? 'idem_records');
  const keyPrefix = checkKeyPrefix(options.keyPrefix ?? '');
  const maxOutcomeBytes = checkPositiveInteger(
    'maxOutcomeBytes',
    options.maxOutcomeBytes ?? DEFAULT_MAX_OUTCOME_BYTES,
  );
  const timeoutMs = positiveMs(
    'statementTimeoutMs',
    options.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS,
  );
  const prepared = options.preparedStatements ?? true;
  const capabilities: StoreCapabilities = { clock: 'server', maxOutcomeBytes };
  const o = schemaObjects(name);

  const texts = {
    acquire: `SELECT * FROM ${o.acquire}($1, $2, $3, $4, $5)`,
    complete: `SELECT ${o.complete}($1, $2, $3, $4) AS ok`,
    // NULL, nothing called, outside the transaction whose id is $5 (CASE evaluates lazily).
    completeInTx: `SELECT CASE WHEN txid_current_if_assigned() = $5::bigint THEN ${o.complete}($1, $2, $3, $4) END AS ok`,
    release: `SELECT ${o.release}($1, $2, $3) AS ok`,
    extend: `SELECT ${o.extend}($1, $2, $3, $4) AS lease_until`,
    get: `SELECT status, fingerprint, owner, fence, lease_until, expires_at, outcome, origin FROM ${o.table} WHERE key = $1 AND expires_at > ${NOW_MS}`,
    renewHeld: `SELECT ${o.renewHeld}($1, $2, $3, $4) AS lease_until`,
    // The held leases that passed go too (a few: one per long transactional execution).
    deleteExpired: `WITH held AS (DELETE FROM ${o.heldLeases} WHERE key IN (SELECT key FROM ${o.heldLeases} WHERE lease_until < ${NOW_MS} - $1::bigint LIMIT $2 FOR UPDATE SKIP LOCKED) AND lease_until < ${NOW_MS} - $1::bigint) DELETE FROM ${o.table} WHERE key IN (SELECT key FROM ${o.table} WHERE expires_at < ${NOW_MS} - $1::bigint AND lease_until < ${NOW_MS} - $1::bigint ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) AND expires_at < ${NOW_MS} - $1::bigint AND lease_until < ${NOW_MS} - $1::bigint`,
  };
  // Named after their text, so two stores (two tables, two versions) never share a name.
  const names = Object.fromEntries(
    Object.entries(texts).map(([op, text]) => [
      op,
      `idem_${op}_${createHash('sha1').update(text).digest('hex').slice(0, 16)}`,
    ]),
  ) as Record<keyof typeof texts, string>;

  function run<R extends object>(
    operation: keyof typeof texts,
    values: unknown[],
    target: Queryable = pool,
    ownTransaction = target === pool,
    limitMs = timeoutMs,
  ) {
    const config = prepared
      ? { name: names[operation], text: texts[operation], values }
      : { text: texts[operation], values };
    // Through the pool each step is its own implicit transaction, retried after a
    // serialization failure; inside the caller's transaction (completeIn) it cannot be.
    return ownTransaction
      ? runStep<R & Record<string, unknown>>(target, operation, config, limitMs)
      : runStatement<R & Record<string, unknown>>(target, operation, config, limitMs);
  }

  const rowKey = (storageKey: string): string => checkKey(keyPrefix + checkKey(storageKey));

  /**
   * Where `extend` is sent through a `pg.Pool`: a {@link RenewalConnection} (a free pool
   * connection at once, else a connection of the store's own outside the pool, opened when
   * needed and closed 10 s after its last statement). Through the pool's queue, a renewal
   * waited behind the app's own statements and new acquisitions: operations that held every
   * connection of a shared pool longer than a lease starved their own renewals, the healthy
   * owner's signal aborted, and a retry waiting in the queue took the key over and ran the
   * operation again (`test/rev20-pool-outage.test.ts`). A client or a checked-out client is
   * used as given.
   */
  let renewals: RenewalConnection | undefined;
  function renewalRoute(leaseMs: number): Queryable {
    // An ended pool refuses the statement, as it refuses every other call (no connection is
    // opened outside it).
    if (!isPgPool(pool) || pool.ending) return pool;
    // (Shared: its opening may take as long as the longest lease renewed through it.)
    renewals = sharedRenewals(pool, timeoutMs, Math.max(timeoutMs, leaseMs));
    return renewals.repeatable;
  }

  async function extendOn(
    input: ExtendInput,
    via: Queryable,
    limitMs = timeoutMs,
  ): Promise<OwnerWriteResult> {
    // Its own implicit transaction on `via` as well (never inside a transaction block).
    const { rows } = await run<{ lease_until: string | null }>(
      'extend',
      extendValues(input),
      via,
      true,
      limitMs,
    );
    const leaseUntil = rows[0]?.lease_until;
    return leaseUntil == null ? NOT_OWNER : { ok: true, leaseUntil: Number(leaseUntil) };
  }

  function completeValues(input: CompleteInput): unknown[] {
    return [
      rowKey(input.key),
      checkOwner(input.owner),
      outcomeBuffer(input.outcome, maxOutcomeBytes),
      duration('retentionMs', input.retentionMs),
    ];
  }

  async function complete(
    input: CompleteInput,
    target: Queryable | undefined,
  ): Promise<OwnerWriteResult> {
    const { rows } = await run<{ ok: boolean }>('complete', completeValues(input), target);
    return rows[0]?.ok ? OK : NOT_OWNER;
  }

  /**
   * A final write (`complete`, `release`) of the plain store: through the pool when a
   * connection is free at once or can be opened with nobody waiting (the usual case, as
   * before); when the pool would queue it (every connection busy, others waiting), through
   * the renewal route, as `extend`. In the pool's queue a completion waited behind the app's
   * statements and the acquisitions that piled up during an outage until its time limit,
   * again at every retry, while the renewals (off the queue) kept the lease: the caller got
   * STORE_UNAVAILABLE for an operation that had succeeded, and the key stayed in progress
   * until the completion got through or the maximum hold passed and the operation ran again.
   * Both writes are owner-checked and a repeat is recognised (contract rule 7), so one sent
   * on the renewal route that failed without the server's answer is sent again through the
   * pool's queue for the time left, as `extend`. Sent once there (not `repeatable`: a large
   * outcome is not uploaded twice) and behind every renewal waiting for the route
   * (`deferred`). A release goes the same way: a burst of them (core gives back up to 64
   * acquisitions at once after an outage) waits behind the renewals too.
   */
  async function finalWrite<R extends object>(
    operation: 'complete' | 'release',
    values: unknown[],
  ): Promise<QueryResult<R & Record<string, unknown>>> {
    if (!isPgPool(pool) || pool.ending || poolServesAtOnce(pool)) return run<R>(operation, values);
    // (Its opening within the statement limit, raised by a renewal for a longer lease.)
    renewals ??= sharedRenewals(pool, timeoutMs, timeoutMs);
    const route = renewals.deferred;
    const began = performance.now();
    return run<R>(operation, values, route, true).catch((error: unknown) => {
      const left = Math.floor(timeoutMs - (performance.now() - began));
      if (
        !(error instanceof StoreUnavailableError) ||
        answeredByServer((error as { cause?: unknown }).cause) ||
        left < FALLBACK_MIN_MS
      )
        throw error;
      return run<R>(operation, values, pool, true, left);
    });
  }

  function extendValues(input: ExtendInput): unknown[] {
    return [
      rowKey(input.key),
      checkOwner(input.owner),
      duration('leaseMs', input.leaseMs),
      duration('retentionMs', input.retentionMs),
    ];
  }

  /** Refuses a pool or a client outside a transaction block (see `completeIn`). */
  function checkTransactionClient(client: Queryable): InvalidInputError | undefined {
    if (!client || typeof (client as { query?: unknown }).query !== 'function')
      return new InvalidInputError('completeIn needs a pg client');
    // A pool sends each statement on whichever connection is free: never a transaction.
    if (typeof (client as { totalCount?: unknown }).totalCount === 'number')
      return new InvalidInputError('completeIn needs the client of a transaction, not a pool');
    // node-postgres keeps the status of the last ReadyForQuery: 'I' idle, 'T' in a
    // transaction block, 'E' in a failed one. (Older versions lack it: not checked there.)
    const status = (
      client as { getTransactionStatus?: () => string | null }
    ).getTransactionStatus?.();
    if (status === 'I' || status === 'E')
      return new InvalidInputError(
        status === 'I'
          ? 'completeIn needs a client inside a transaction block (send BEGIN first); nothing was written'
          : 'completeIn was given a client whose transaction has failed; roll it back',
      );
    return undefined;
  }

  return {
    capabilities,
    table: name.text,
    pool,
    statementTimeoutMs: timeoutMs,
    rowKey,
    admin: createPostgresAdmin(pool, o.table, rowKey, timeoutMs),

    async acquire(input: AcquireInput): Promise<AcquireResult> {
      const values = [
        rowKey(input.key),
        checkFingerprint(input.fingerprint),
        checkOwner(input.owner),
        duration('leaseMs', input.leaseMs),
        duration('retentionMs', input.retentionMs),
      ];
      const { rows } = await run<AcquireRow>('acquire', values);
      const row = rows[0]!;
      if (row.o_acquired) {
        // The function answers the origin in `o_owner`; one of the version before origins
        // answers nothing there (its acquisition applied: core gives it back).
        if (row.o_owner == null) throw outdatedSchema(name);
        return {
          kind: 'acquired',
          fence: Number(row.o_fence),
          leaseUntil: Number(row.o_lease_until),
          takeover: row.o_takeover,
          origin: row.o_owner,
        };
      }
      return {
        kind: 'found',
        now: Number(row.o_now),
        record: toRecord({
          status: row.o_status,
          fingerprint: row.o_fingerprint,
          owner: row.o_owner as string,
          fence: row.o_fence,
          lease_until: row.o_lease_until,
          expires_at: row.o_expires_at,
          outcome: row.o_outcome,
        }),
      };
    },

    async complete(input: CompleteInput): Promise<OwnerWriteResult> {
      const { rows } = await finalWrite<{ ok: boolean }>('complete', completeValues(input));
      return rows[0]?.ok ? OK : NOT_OWNER;
    },

    completeIn(client: Queryable, input: CompleteInput): Promise<OwnerWriteResult> {
      const refused = checkTransactionClient(client);
      return refused ? Promise.reject(refused) : complete(input, client);
    },

    async completeInTransaction(
      client: Queryable,
      input: CompleteInput,
      transactionId: string,
    ): Promise<OwnerWriteResult | 'other_transaction'> {
      const refused = checkTransactionClient(client);
      if (refused) throw refused;
      if (!/^[1-9]\d{0,19}$/.test(transactionId))
        throw new InvalidInputError('transactionId must be a transaction id (txid_current())');
      const values = [...completeValues(input), transactionId];
      const { rows } = await run<{ ok: boolean | null }>('completeInTx', values, client);
      const ok = rows[0]?.ok;
      if (ok == null) return 'other_transaction';
      return ok ? OK : NOT_OWNER;
    },

    async renewHeld(
      input: ExtendInput,
      fence: number,
      via: Queryable = pool,
    ): Promise<number | undefined> {
      if (!Number.isSafeInteger(fence)) throw new InvalidInputError('fence must be a safe integer');
      const values = [
        rowKey(input.key),
        checkOwner(input.owner),
        fence,
        duration('leaseMs', input.leaseMs),
      ];
      // Its own implicit transaction on `via` as well (never inside a transaction block).
      const { rows } = await run<{ lease_until: string | null }>('renewHeld', values, via, true);
      const leaseUntil = rows[0]?.lease_until;
      return leaseUntil == null ? undefined : Number(leaseUntil);
    },

    async release(input: ReleaseInput): Promise<OwnerWriteResult> {
      const values = [
        rowKey(input.key),
        checkOwner(input.owner),
        duration('retentionMs', input.retentionMs),
      ];
      const { rows } = await finalWrite<{ ok: boolean }>('release', values);
      return rows[0]?.ok ? OK : NOT_OWNER;
    },

    extend(input: ExtendInput): Promise<OwnerWriteResult> {
      const leaseMs = typeof input.leaseMs === 'number' && input.leaseMs > 0 ? input.leaseMs : 0;
      const route = renewalRoute(leaseMs);
      if (route === pool) return extendOn(input, pool);
      const began = performance.now();
      // Failed without the server's answer (its own connection refused: the server at
      // `max_connections`, a role's connection limit; or broken): the pool's queue for the time
      // left, as before the renewal route. A renewal may be sent twice (owner-checked, the
      // lease set from the server's clock), and it never takes longer than one statement's limit.
      return extendOn(input, route).catch((error: unknown) => {
        const left = Math.floor(timeoutMs - (performance.now() - began));
        if (
          !(error instanceof StoreUnavailableError) ||
          answeredByServer((error as { cause?: unknown }).cause) ||
          left < FALLBACK_MIN_MS
        )
          throw error;
        return extendOn(input, pool, left);
      });
    },

    extendVia: extendOn,

    async get(key: string): Promise<StoredRecord | undefined> {
      const { rows } = await run<RecordRow>('get', [rowKey(key)]);
      return rows[0] ? toRecord(rows[0]) : undefined;
    },

    async ensureSchema(): Promise<void> {
      // Several statements in one simple query: one implicit transaction, under the lock.
      await runStep(pool, 'ensureSchema', { text: schemaSql(name) }, Math.max(timeoutMs, 30_000));
    },

    async deleteExpired(deleteOptions = {}): Promise<number> {
      const grace = duration('graceMs', deleteOptions.graceMs ?? DEFAULT_GRACE_MS);
      const limit = deleteOptions.limit ?? 1_000;
      if (!(Number.isSafeInteger(limit) && limit > 0))
        throw new InvalidInputError('limit must be a positive integer');
      const result = await run('deleteExpired', [grace, limit]);
      return result.rowCount ?? 0;
    },

    async close(): Promise<void> {
      // Nothing to free: the pool belongs to the caller.
    },
  };
}

/**
 * The stores on one pool (a table or a key prefix each) share its renewal connection, one per
 * statement limit (the session's `statement_timeout`): one connection more than the pool's
 * `max`, not one per store.
 */
const renewalsByPool = new WeakMap<Pool, Map<number, RenewalConnection>>();
function sharedRenewals(pool: Pool, statementMs: number, openMs: number): RenewalConnection {
  let byLimit = renewalsByPool.get(pool);
  if (!byLimit) {
    byLimit = new Map();
    renewalsByPool.set(pool, byLimit);
  }
  let renewals = byLimit.get(statementMs);
  if (!renewals) {
    renewals = new RenewalConnection(pool, openMs, statementMs);
    byLimit.set(statementMs, renewals);
  } else renewals.allowOpening(openMs);
  return renewals;
}

/** Less time left than this after the renewal route failed: no fallback to the pool's queue. */
const FALLBACK_MIN_MS = 10;

/**
 * The pool hands a connection out now: one is idle, or it may open one, and nobody waits.
 * (Not a free idle one's liveness: as before, a statement on a dead idle connection fails by
 * its limit and core retries it.)
 */
function poolServesAtOnce(pool: Pool): boolean {
  if (pool.waitingCount > 0) return false;
  if (pool.idleCount > 0) return true;
  const max = Number(pool.options.max) || 10;
  return pool.totalCount < max;
}

/** A `pg.Pool` (its `connect` and counts), not a `Client` nor a checked-out client. */
function isPgPool(pool: unknown): pool is Pool {
  const candidate = pool as { connect?: unknown; totalCount?: unknown } | null;
  return typeof candidate?.connect === 'function' && typeof candidate.totalCount === 'number';
}
