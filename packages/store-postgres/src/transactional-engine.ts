import {
  checkOutcomePolicy,
  createIdempotency,
  type DrainOptions,
  decideOutcome,
  type ExecuteResult,
  type IdempotencyOptions,
  type IdempotencyStore,
  type IdempotentRequest,
  InvalidInputError,
  LeaseLostError,
  type OperationContext,
  type OutcomePolicy,
  outcomePolicyAnswer,
  type ResolvedSettings,
  successOnly,
} from '@idem/core';
import type { Pool, PoolClient } from 'pg';
import {
  BusinessTransaction,
  beforeOperation,
  TransactionEndedByOperationError,
  TransactionNotCommittedError,
  warnEnded,
} from './business-transaction.js';
import { ExecutionRegistry } from './execution-registry.js';
import { holdRecordSql } from './hold-record-sql.js';
import type { PostgresStore } from './options.js';
import { RenewalConnection } from './renewal-connection.js';
import { parseTableName } from './table-name.js';
import { armUploadGuard, uploadGuardSql } from './upload-guard.js';

/** What a transactional operation receives: core's context plus the open transaction. */
export interface TransactionContext extends OperationContext {
  /**
   * The client of the business transaction (`BEGIN` already sent). Run the business writes
   * on it; the engine completes the idempotency record on it and commits. Never send
   * `COMMIT` or `ROLLBACK` on it yourself, and never use it after the operation returned.
   * (Detected afterwards, by the transaction's id: the writes and the record then no longer
   * commit together, but the outcome is still recorded, never released for a second run:
   * see `TransactionEndedByOperationError`.)
   */
  tx: PoolClient;
}

/** Isolation level of the business transaction. */
export type IsolationLevel = 'read committed' | 'repeatable read' | 'serializable';

/** Options of {@link createPostgresIdempotency}: core's options, with a Postgres store. */
export interface PostgresIdempotencyOptions<T> extends Omit<IdempotencyOptions<T>, 'store'> {
  /** The store; its `pool` MUST be a `pg.Pool` (the transaction gets a connection of its own). */
  store: PostgresStore;
  /**
   * Isolation level of the business transaction, set on its `BEGIN` whatever the sessions'
   * default. Every level keeps the engine's guarantees; under `repeatable read` and
   * `serializable` the snapshot is taken by the record's lock right after `BEGIN`, and a
   * serialization failure ends in `TransactionNotCommittedError` (nothing recorded, key
   * released). `serializable` costs one more round trip (the record's tuple id, read so
   * that the transaction's predicate lock covers that row only) and needs the schema of
   * this version (`<table>_hold`). @default 'read committed'
   */
  isolationLevel?: IsolationLevel;
}

/** The engine of {@link createPostgresIdempotency}. */
export interface PostgresIdempotency<T> {
  /**
   * Acquires the key outside any transaction (so a concurrent duplicate gets `IN_PROGRESS`
   * or waits, and a completed key replays, exactly as with core's engine), then opens a
   * transaction on a connection of the pool, runs `operation` with it, records the outcome
   * in that same transaction and commits once: the business writes and the record commit
   * together or not at all.
   *
   * - The operation returns: the outcome (if final) is completed inside the transaction,
   *   then `COMMIT`. The answer is the value, or a replay for every later call.
   * - The operation throws: the transaction is rolled back; the error is then final or not
   *   by the outcome policy, as in core (a final failure is recorded on its own, with no
   *   business rows, since they rolled back).
   * - The transaction holds the record from `BEGIN` (a row lock sent in the same round
   *   trip) to its end: nobody can take the key over meanwhile, heartbeats renew the lease
   *   inside the transaction (the lock is the lease; the renewal commits only with it), and
   *   a duplicate gets `IN_PROGRESS` at once, also after the
   *   stored lease passed. If the key was taken over before the lock (a long wait for a
   *   connection), the operation does not run: `LeaseLostError`. The maximum hold ends a
   *   transaction still running (its connection is dropped; nothing commits).
   * - The transaction could not start or did not commit (a connection killed, a timeout, a
   *   serialization failure at commit): nothing was recorded, the key is released,
   *   `TransactionNotCommittedError` (code `STORE_UNAVAILABLE`). When the connection died
   *   during `COMMIT`, the record tells whether it committed: if it did, the call succeeds.
   *
   * - `COMMIT` was sent but not answered within core's `completionWaitMs` (a server frozen at
   *   `COMMIT`): `CommitOutcomeUnknownError` (code `STORE_UNAVAILABLE`); the completion
   *   settles in the background (a retry replays if it committed, runs once if not). The
   *   completion statement not answered in time, before `COMMIT`: `COMMIT` is never sent,
   *   `TransactionNotCommittedError`.
   *
   * @throws everything core's `execute` throws, `TransactionNotCommittedError` and
   * `CommitOutcomeUnknownError`
   */
  execute(
    request: IdempotentRequest,
    operation: (ctx: TransactionContext) => Promise<T>,
  ): Promise<ExecuteResult<T>>;
  /**
   * Waits for the work still being retried in the background: final writes, and give-backs
   * unless `{ finalWritesOnly: true }` (as core's `drain`).
   */
  drain(timeoutMs?: number, options?: DrainOptions): Promise<number>;
  /** The options in force, defaults filled in. */
  readonly settings: ResolvedSettings;
}

/** Longest `idle_in_transaction_session_timeout` PostgreSQL takes, in ms. */
const MAX_IDLE_LIMIT_MS = 2_147_483_647;

/**
 * The business transaction's idle limit (set at `BEGIN`): the server ends a transaction idle
 * this long, which frees the record's row of an owner gone silent. Heartbeats restart it
 * (see `BusinessTransaction.heartbeat`), so it is the lease and a margin for heartbeats that
 * run late (twice core's grace, a quarter of the lease, at most a second, and 5 ms): a live
 * owner's transaction is never ended by it. A takeover waits for the held lease as well, so
 * the limit is not what the owner's signal relies on.
 */
export function transactionIdleLimit(settings: {
  leaseMs: number;
  heartbeatMs: number | false;
  storeTimeoutMs: number;
}): number {
  const { leaseMs, heartbeatMs, storeTimeoutMs } = settings;
  const grace = Math.min(storeTimeoutMs, Math.max(10, (heartbeatMs || 0) / 5));
  const idleLimitMs = leaseMs + Math.min(1_000, leaseMs / 4) + 2 * grace + 5;
  if (idleLimitMs > MAX_IDLE_LIMIT_MS)
    throw new InvalidInputError(
      `leaseMs is too long for the transactional engine: the transaction's idle limit (the lease and ${Math.ceil(idleLimitMs - leaseMs)} ms) must fit PostgreSQL's ${MAX_IDLE_LIMIT_MS} ms`,
    );
  return idleLimitMs;
}

const BEGIN: Record<IsolationLevel, string> = {
  'read committed': 'BEGIN ISOLATION LEVEL READ COMMITTED',
  'repeatable read': 'BEGIN ISOLATION LEVEL REPEATABLE READ',
  serializable: 'BEGIN ISOLATION LEVEL SERIALIZABLE',
};

function isPool(pool: unknown): pool is Pool {
  const candidate = pool as { connect?: unknown; totalCount?: unknown } | null;
  return typeof candidate?.connect === 'function' && typeof candidate.totalCount === 'number';
}

/**
 * Core's engine bound to a Postgres store, whose operations run inside a business
 * transaction that also records their outcome (see {@link PostgresIdempotency.execute}).
 *
 * What it guarantees, beyond core's guarantees: for writes made through `ctx.tx`, exactly
 * once, without fences. The record is completed only by the transaction that holds the
 * business writes, which holds the record's row from its start and checks the owner, so
 * "written but not recorded" and "recorded but not written" cannot happen, whatever is
 * killed when, and no takeover can happen while that transaction may still commit; an
 * execution that lost the key before it could hold it never runs. What it does not guarantee: effects
 * outside this database (an e-mail, a call to a payment API, a write through another
 * connection) are not part of the transaction; they can happen twice if a transaction
 * aborts after them, so guard them with `ctx.fence` as with core's engine.
 */
export function createPostgresIdempotency<T = unknown>(
  options: PostgresIdempotencyOptions<T>,
): PostgresIdempotency<T> {
  const { store, isolationLevel = 'read committed', ...rest } = options;
  if (typeof store?.completeIn !== 'function')
    throw new InvalidInputError('createPostgresIdempotency needs a store from createPostgresStore');
  const given: unknown = store.pool;
  if (!isPool(given))
    throw new InvalidInputError(
      'createPostgresIdempotency needs a store built on a pg Pool: the transaction takes a connection of its own',
    );
  const pool: Pool = given;
  // Own keys only: BEGIN['toString'] would be a function.
  if (!(typeof isolationLevel === 'string' && Object.hasOwn(BEGIN, isolationLevel)))
    throw new InvalidInputError(
      "isolationLevel must be 'read committed', 'repeatable read' or 'serializable'",
    );
  const begin = BEGIN[isolationLevel];

  const table = parseTableName(store.table);
  /** Failures raised by this engine for an operation that ended its transaction itself. */
  const endedByOperation = new WeakSet<object>();
  const executions = new ExecutionRegistry();

  const transactional: IdempotencyStore = {
    capabilities: store.capabilities,
    async acquire(input) {
      const result = await store.acquire(input);
      if (result.kind === 'acquired') executions.acquired(input.key, result.fence, input.owner);
      return result;
    },
    complete(input) {
      const tx = executions.byOwner(input.key, input.owner)?.tx;
      return tx ? tx.complete(input) : store.complete(input);
    },
    async release(input) {
      executions.dropWaiting(input.key, input.owner);
      await executions.byOwner(input.key, input.owner)?.tx?.rollback();
      return store.release(input);
    },
    extend(input) {
      const execution = executions.byOwner(input.key, input.owner);
      // Through the pool, as before the store's own extend got a renewal route: the engine
      // keeps its held rows safe on its own renewal connection (`renewHeld`).
      const send = () => store.extendVia(input, store.pool);
      return execution ? execution.extend(input, send) : send();
    },
    get: (key) => store.get(key),
  };

  const listener = rest.onEvent;
  checkOutcomePolicy(rest.isFinal);
  const policy = (rest.isFinal ?? successOnly) as OutcomePolicy<T>;
  const idem = createIdempotency<T>({
    ...rest,
    store: transactional,
    onEvent: (event) => {
      if (event.type === 'completion_abandoned') {
        // Core gave the completion up (max hold passed during a long outage): nothing will
        // ask for this transaction again.
        const execution = executions.byFence(event.storageKey, event.fence);
        if (execution) executions.end(execution);
      } else if (event.type === 'lease_lost' && event.phase === 'max_hold') {
        // The row lock would keep the key for as long as the operation runs: the maximum
        // hold ends the transaction, as it ends any lease.
        executions
          .byFence(event.storageKey, event.fence)
          ?.tx?.abort(
            new LeaseLostError('The maximum hold time passed; the transaction was ended'),
          );
      }
      return listener?.(event);
    },
    // Asked only of an outcome the operation's execution did not decide itself (see
    // `decideOutcome` below). A transaction that could not start, or a key lost before it
    // could be held, is never an outcome: the key goes back. An operation that ended its
    // transaction itself and threw may have committed writes: always an outcome, never a
    // release.
    isFinal: (settled) => {
      if (settled.ok) return policy(settled);
      if (endedByOperation.has(settled.error as object)) return true;
      return settled.error instanceof TransactionNotCommittedError ||
        beforeOperation.has(settled.error as object)
        ? false
        : policy(settled);
    },
  });
  const { retentionMs } = idem.settings;
  const idleLimitMs = transactionIdleLimit(idem.settings);
  // The longest a large statement waits for its upload guard, counted from the last
  // ReadyForQuery (the server's idle timer runs meanwhile): the idle limit less half its
  // margin over the lease, left for the statement (its Flush) to reach the server.
  const uploadHoldMs = idleLimitMs - (idleLimitMs - idem.settings.leaseMs) / 2;

  /**
   * The policy's answer, read as core reads it (truthiness; a Promise is a policy fault);
   * `error` holds what it threw (then the answer is false).
   */
  function askPolicy(settled: Parameters<OutcomePolicy<T>>[0]): {
    final: boolean;
    error?: { error: unknown };
  } {
    try {
      return { final: outcomePolicyAnswer(policy(settled)) };
    } catch (error) {
      return { final: false, error: { error } };
    }
  }
  const connectMs = store.statementTimeoutMs;
  // A new connection may take longer than a statement (TLS, a busy server): up to a lease.
  const renewals = new RenewalConnection(
    pool,
    Math.max(connectMs, idem.settings.leaseMs),
    connectMs,
  );

  /** A pool connection within the store's statement time limit; a late one goes back. */
  function connect(): Promise<PoolClient> {
    return new Promise<PoolClient>((resolve, reject) => {
      let late = false;
      const timer = setTimeout(() => {
        late = true;
        reject(
          new TransactionNotCommittedError(
            `No pool connection for the business transaction within ${connectMs} ms`,
          ),
        );
      }, connectMs);
      pool.connect().then(
        (client) => {
          if (late) client.release();
          else {
            clearTimeout(timer);
            resolve(client);
          }
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(
            new TransactionNotCommittedError('Could not connect for the business transaction', {
              cause: error,
            }),
          );
        },
      );
    });
  }

  async function execute(
    request: IdempotentRequest,
    operation: (ctx: TransactionContext) => Promise<T>,
  ): Promise<ExecuteResult<T>> {
    if (typeof operation !== 'function')
      throw new InvalidInputError('execute needs an operation function');
    let tx: BusinessTransaction | undefined;
    let unused: (() => void) | undefined;
    // The policy's error of a success: thrown once core has recorded it (its transaction
    // ended by the operation, or undecided) or released the key (rolled back).
    let policyFailed: { error: unknown } | undefined;
    try {
      const result = await idem.execute(request, async (ctx) => {
        // Claimed at once, before any heartbeat of this execution can fire.
        const execution = executions.start(ctx.storageKey, ctx.fence);
        if (execution === undefined)
          throw new TransactionNotCommittedError('No acquisition is known for this execution');
        // Opened (in the background) before the transaction takes a pool connection.
        unused = renewals.use();
        let client: PoolClient;
        try {
          client = await connect();
        } catch (error) {
          executions.end(execution);
          throw error;
        }
        const current = new BusinessTransaction(
          store,
          client,
          ctx.storageKey,
          execution.owner,
          retentionMs,
          () => executions.end(execution),
          ctx.fence,
          idleLimitMs,
          renewals,
          {
            arm: (backend, limitMs) =>
              armUploadGuard(
                pool,
                uploadGuardSql(
                  table,
                  {
                    key: store.rowKey(ctx.storageKey),
                    owner: execution.owner,
                    fence: ctx.fence,
                    ...backend,
                  },
                  // The idle limit's margin over the lease, counted from the last renewal.
                  idleLimitMs - idem.settings.leaseMs,
                  (value) => client.escapeLiteral(value),
                ),
                Math.min(connectMs, limitMs),
              ),
            holdMs: uploadHoldMs,
          },
        );
        execution.tx = current;
        tx = current;
        const hold = holdRecordSql(
          table,
          { key: store.rowKey(ctx.storageKey), owner: execution.owner, fence: ctx.fence },
          (value) => client.escapeLiteral(value),
          isolationLevel === 'serializable',
        );
        await execution.whileNoHeartbeat(() => current.begin(begin, hold));
        // Lost while the transaction was opened: the operation never starts (it would run with
        // its signal already aborted, and a retry could take the key once the transaction ends).
        if (ctx.signal.aborted) await current.notStarted();
        let value: T;
        try {
          // Core's signal, joined on first read with the transaction's own (its connection
          // broke while it held the row: see BusinessTransaction.lostSignal).
          let signal: AbortSignal | undefined;
          value = await operation({
            fence: ctx.fence,
            storageKey: ctx.storageKey,
            get signal() {
              signal ??= eitherSignal(ctx.signal, current.lostSignal);
              return signal;
            },
            // Core's, read when used (a digest of the store's origin).
            get originId() {
              return ctx.originId;
            },
            tx: client,
          });
        } catch (error) {
          // Rolled back when still ours; otherwise the operation committed (or ended) it
          // itself: its writes may be in, so the failure is final (see the error). Unknown:
          // the completion decides, once the server answers.
          const state = await current.rollBackAfterOperation();
          if (state === 'ended') {
            const ended = new TransactionEndedByOperationError({ cause: error });
            endedByOperation.add(ended);
            throw ended;
          }
          if (state === 'undecided') {
            current.thrown = error;
            current.finalByPolicy = askPolicy({ ok: false, error }).final;
            // Final: the completion decides (see `BusinessTransaction.decide`).
            decideOutcome(ctx, true);
          }
          throw error;
        }
        // The policy is asked once, here, before anything commits, and core is told the
        // answer for this execution (`decideOutcome`: by its context, never by the value,
        // which another execution may return too). A value it does not keep (or a policy
        // that throws) is rolled back here, with the same check as after a throw (its one
        // round trip replaces the release's ROLLBACK): nothing committed, so core releases
        // the key and the caller gets the value (or the policy's error), as core answers for
        // a success it does not keep. One the operation committed itself is recorded, never
        // released for a retry that would write its rows again.
        if (current.phase === 'open') {
          const asked = askPolicy({ ok: true, value });
          policyFailed = asked.error;
          if (asked.final) decideOutcome(ctx, true);
          else {
            const state = await current.rollBackAfterOperation();
            decideOutcome(ctx, state !== 'ours');
            if (state === 'ended') warnEnded();
          }
        }
        return value;
      });
      if (policyFailed) throw policyFailed.error;
      return result;
    } catch (error) {
      // Core's wait for the completion ran out ("not recorded yet"): told as what is known
      // of this transaction's COMMIT instead (unknown once sent, else not committed).
      throw tx?.unsettledError(error, idem.settings.completionWaitMs) ?? error;
    } finally {
      // Still open: core neither completed nor released (it failed before either). Nothing
      // commits; the key is left to its lease.
      if (tx?.phase === 'open') await tx.rollback();
      unused?.();
    }
  }

  return {
    execute,
    drain: (timeoutMs, options) => idem.drain(timeoutMs, options),
    settings: idem.settings,
  };
}

/** A signal that aborts (with its reason) when either `a` or `b` does. */
function eitherSignal(a: AbortSignal, b: AbortSignal): AbortSignal {
  if (a.aborted) return a;
  if (b.aborted) return b;
  const both = new AbortController();
  const onA = () => both.abort(a.reason);
  const onB = () => both.abort(b.reason);
  a.addEventListener('abort', onA, { once: true });
  b.addEventListener('abort', onB, { once: true });
  both.signal.addEventListener(
    'abort',
    () => {
      a.removeEventListener('abort', onA);
      b.removeEventListener('abort', onB);
    },
    { once: true },
  );
  return both.signal;
}
