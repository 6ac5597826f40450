import type { EventEmitter } from 'node:events';
import {
  type CompleteInput,
  type ExtendInput,
  IdemError,
  InvalidInputError,
  LeaseLostError,
  markErrorClass,
  type OwnerWriteResult,
  StoreUnavailableError,
} from '@idem/core';
import type { PoolClient, QueryConfig } from 'pg';
import { type HoldRecordSql, idleLimit } from './hold-record-sql.js';
import type { PostgresStore } from './options.js';
import { runStatement } from './pg-call.js';
import type { SideRoutes } from './renewal-connection.js';
import { rollbackIfOurs, transactionFate, transactionStatus } from './transaction-fate.js';
import { UploadGuard } from './upload-guard.js';

/** The rows of the second statement of a simple query of several. */
function secondResult<R>(results: unknown): R[] {
  return ((results as Array<{ rows: R[] }>)[1]?.rows ?? []) as R[];
}

/**
 * The business transaction did not commit, and nothing of it was recorded: the key was given
 * back (or, when even that failed, is left to its lease), so a retry runs the operation
 * again. Code `STORE_UNAVAILABLE` (an HTTP integration answers 503 with `Retry-After`). It is
 * deliberately not a `StoreUnavailableError`: core retries those, and there is nothing left
 * to retry, the transaction is gone.
 */
export class TransactionNotCommittedError extends IdemError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('STORE_UNAVAILABLE', message, options);
    // Named by its own spelling, not by the class's name, which a bundle minified without
    // keepNames changes (as core's errors are named, corerev3): logs, and a failure recorded
    // and replayed, show it. An app's subclass keeps its own name (the corerev4 review).
    if (new.target === TransactionNotCommittedError) this.name = 'TransactionNotCommittedError';
  }
}

/**
 * The operation ended the business transaction itself (a `COMMIT`, `ROLLBACK`, `END`,
 * `ABORT`, `COMMIT AND CHAIN` or `PREPARE TRANSACTION` sent on `tx`, alone or inside a text
 * of several statements) and then threw. Its writes may have committed, so the key is not
 * given back for a retry that would write them again: this error is recorded as the
 * execution's final outcome, whatever the outcome policy (a retry replays it as
 * `ReplayedFailureError`). `cause` is what the operation threw. Never send transaction
 * control on `tx`.
 */
export class TransactionEndedByOperationError extends IdemError<'TRANSACTION_ENDED_BY_OPERATION'> {
  constructor(options: { cause: unknown }) {
    super(
      'TRANSACTION_ENDED_BY_OPERATION',
      'The operation ended the business transaction itself (transaction control sent on tx), then threw: its writes may have committed, so the failure was recorded as final and the key was not released',
      options,
    );
    // Named by its own spelling, not by the class's name, which a bundle minified without
    // keepNames changes (as core's errors are named, corerev3): logs, and a failure recorded
    // and replayed, show it. An app's subclass keeps its own name (the corerev4 review).
    if (new.target === TransactionEndedByOperationError)
      this.name = 'TransactionEndedByOperationError';
  }
}

/**
 * `COMMIT` of the business transaction was sent, but its answer did not come within the
 * engine's wait (core's `completionWaitMs`, `storeTimeoutMs` by default): whether the
 * transaction committed is not known yet. Code `STORE_UNAVAILABLE` (an HTTP integration
 * answers 503 with `Retry-After`). The engine settles it in the background from the server's
 * own status of the transaction, owner-checked: if it committed, its rows and its record are
 * in and every retry replays the outcome; if it did not, nothing of it is in, the key is
 * released and a retry runs the operation once. Meanwhile a retry is answered
 * `IN_PROGRESS` or `STORE_UNAVAILABLE`, never a second run of a transaction that may have
 * committed. `cause` is core's error of the wait.
 */
export class CommitOutcomeUnknownError extends IdemError {
  /** Always `'unknown'`: the transaction may or may not have committed. */
  readonly commitOutcome = 'unknown' as const;
  constructor(waitedMs: number, options?: { cause?: unknown }) {
    super(
      'STORE_UNAVAILABLE',
      `COMMIT of the business transaction got no answer within ${waitedMs} ms: whether it committed is not known yet. It is settled in the background: if it committed, a retry replays its outcome; if not, the key is released and a retry runs the operation once`,
      options,
    );
    if (new.target === CommitOutcomeUnknownError) this.name = 'CommitOutcomeUnknownError';
  }
}

// Another copy's (the CommonJS build) recognised by these marks, never an app's class named the same.
markErrorClass(TransactionNotCommittedError, 'TransactionNotCommittedError');
markErrorClass(CommitOutcomeUnknownError, 'CommitOutcomeUnknownError');
markErrorClass(TransactionEndedByOperationError, 'TransactionEndedByOperationError');

/** The warning code emitted when an operation that returned had ended its transaction itself. */
export const TRANSACTION_ENDED_WARNING = 'IDEM_TRANSACTION_ENDED_BY_OPERATION';

/** The Node warning for an operation that ended its transaction itself (see the README). */
export function warnEnded(): void {
  process.emitWarning(
    'An operation of the transactional engine ended its business transaction itself (transaction control sent on tx): its writes and its record did not commit together; the outcome was recorded afterwards',
    { code: TRANSACTION_ENDED_WARNING },
  );
}

/**
 * Errors of the engine's own that end an execution before its operation ran (the key was
 * lost before the transaction could hold it): never an outcome, whatever the policy says.
 */
export const beforeOperation = new WeakSet<object>();

/** A heartbeat's statement on the business transaction's connection (see `heartbeat`). */
export const HEARTBEAT_SQL = 'SELECT 1 AS idem_heartbeat';

/** The savepoint the operation runs in (see `BusinessTransaction.begin`). */
const OPERATION_SAVEPOINT = 'idem_operation';

/** Tries of `BEGIN` + lock that met a serialization failure or a deadlock. */
const MAX_BEGIN_TRIES = 3;
const RETRIABLE = new Set(['40001', '40P01']);

const NOT_OWNER: OwnerWriteResult = { ok: false, reason: 'not_owner' };
const OK: OwnerWriteResult = { ok: true };

function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}

/**
 * One business transaction, open on its own pool connection from before the operation runs
 * until the record's completion commits with it (or it is rolled back).
 *
 * `complete` is core's final write for this execution: the owner-checked completion sent
 * inside the transaction, then `COMMIT`, once. When that fails, whether the transaction
 * committed is settled from the record itself: an owner-checked `release` applies only to a
 * record still in progress, that is one whose transaction did not commit (the row lock of a
 * transaction still ending makes it wait for the end); if it applies, the key is given back
 * and the caller gets `TransactionNotCommittedError`; if not, the record shows whether this
 * owner's completion committed. Core repeats `complete` while that settling fails with
 * `StoreUnavailableError`, and every repeat settles again: never a plain completion, which
 * could record an outcome without the business rows.
 */
export class BusinessTransaction {
  /**
   * `undecided`: the operation is over and the transaction gone, but whether the operation
   * had committed it itself could not be read (no answer from the server): the execution
   * stays registered and the completion core sends decides, once the status can be read.
   */
  phase: 'open' | 'finishing' | 'undecided' | 'done' = 'open';
  /** For an undecided execution: whether core's outcome policy calls the outcome final. */
  finalByPolicy = false;
  /** For an undecided execution: what the operation threw, if it threw. */
  thrown: unknown;
  private result: Promise<OwnerWriteResult> | undefined;
  /**
   * How far the completion went: `none` (not asked), `completing` (the completion statement
   * on its way, `COMMIT` not sent), `commit_sent`, `settled` (committed, or settled from the
   * record either way). See `unsettledError`.
   */
  private commitStage: 'none' | 'completing' | 'commit_sent' | 'settled' = 'none';
  /** The caller was told the transaction did not commit: `COMMIT` is never sent after that. */
  private commitRefused = false;
  private deciding: Promise<OwnerWriteResult> | undefined;
  /**
   * node-postgres reported the client idle (a ReadyForQuery with status 'I') while the
   * operation ran, after the lock: the operation ended the transaction itself, positively
   * seen, whatever happens to the connection afterwards.
   */
  private seenIdle = false;
  /** A heartbeat's statement on the transaction's connection, on its way. */
  private pinging = false;
  /** Aborts when the transaction's connection broke while it held the row: see `lostSignal`. */
  private lostController: AbortController | undefined;
  private readonly onReady = (message: { status?: unknown } | undefined) => {
    if (this.locked && this.phase === 'open' && message?.status === 'I') this.seenIdle = true;
  };
  /**
   * A `COMMIT` of the operation's own completed on the connection while it ran, after the
   * lock (`COMMIT` then `BEGIN` in one string, or `COMMIT AND CHAIN`, leave no idle
   * ReadyForQuery behind): its writes are in, whatever the completion finds next.
   */
  private commitSeen = false;
  private readonly onCommandComplete = (message: { text?: unknown } | undefined) => {
    if (this.locked && this.phase === 'open' && message?.text === 'COMMIT') this.commitSeen = true;
  };
  private broken: Error | undefined;
  /** The transaction holds the record's row (from the lock after BEGIN to its end). */
  private locked = false;
  /** The transaction's id (`txid_current()`), read with the lock: the completion checks it. */
  private xid: string | undefined;
  /** The connection was given back or dropped. */
  private gone = false;
  /** Watches the operation's statements while the row is held (see `UploadGuard`). */
  private uploads: UploadGuard | undefined;
  /** `pg_terminate_backend` of this transaction's backend, sent by `abort`. */
  private terminating: Promise<void> | undefined;
  private readonly onError = (error: Error) => {
    // The connection died (a terminated backend, a reset): the transaction cannot commit.
    this.broken = error;
    this.connectionLost();
  };
  private readonly onEnd = () => {
    this.broken ??= new Error('The business transaction connection ended');
    this.connectionLost();
  };

  constructor(
    private readonly store: PostgresStore,
    readonly client: PoolClient,
    readonly storageKey: string,
    readonly owner: string,
    private readonly retentionMs: number,
    private readonly forget: () => void,
    /** The acquisition's fence (the held lease is renewed for it). */
    private readonly fence: number,
    /** The longest the transaction may sit idle before the server ends it. */
    private readonly idleLimitMs: number,
    /**
     * Where the renewals and the termination of the backend are sent: the engine's renewal
     * connection, outside the pool that the business transactions may all hold (the
     * renewals as repeatable statements, the termination too once it names the
     * transaction's id).
     */
    private readonly side: SideRoutes,
    /**
     * Arms a guard for one large statement of the operation's (see `UploadGuard`): resolves
     * true once it runs, within `limitMs`; a statement waits for it at most until `holdMs`
     * passed since the last ReadyForQuery. Without it, every statement is sent under the
     * idle limit.
     */
    private readonly armUpload?: {
      arm: (backend: { pid: number; xid: string }, limitMs: number) => Promise<boolean>;
      holdMs: number;
    },
  ) {
    client.on('error', this.onError);
    client.on('end', this.onEnd);
    this.connection()?.on('readyForQuery', this.onReady);
    this.connection()?.on('commandComplete', this.onCommandComplete);
  }

  /**
   * The connection broke while the transaction held the row: the server frees the row, and
   * the lease stored (committed) is the acquisition's or one renewed outside the
   * transaction, which may have passed long ago, so a duplicate may take the key over at
   * once. The operation's signal is told at once (see `lostSignal`), not at its next
   * heartbeat.
   */
  private connectionLost(): void {
    if (this.locked && this.phase === 'open' && !this.gone) {
      this.lostController ??= new AbortController();
      if (!this.lostController.signal.aborted)
        this.lostController.abort(
          new LeaseLostError(
            "The business transaction's connection broke while it held the record: nothing of it commits, and the key may be taken over",
          ),
        );
    }
  }

  /** Aborts (`LeaseLostError`) when the connection breaks while the row is held; the engine joins it to the operation's signal. */
  get lostSignal(): AbortSignal {
    this.lostController ??= new AbortController();
    return this.lostController.signal;
  }

  /** node-postgres' protocol connection of the client (absent in pg-native). */
  private connection(): EventEmitter | undefined {
    const found = (this.client as { connection?: { on?: unknown } }).connection;
    return typeof found?.on === 'function' ? (found as EventEmitter) : undefined;
  }

  /** The operation ended the transaction itself, as positively seen on the client. */
  private endedSeen(): boolean {
    return this.seenIdle || this.transactionStatus() === 'I';
  }

  /**
   * Sends `BEGIN ...` and, in the same round trip, the lock of the record's row (`lockSql`),
   * the transaction's idle limit and a savepoint: from here until the transaction ends
   * nobody can take the key over, and a key lost before is known before the operation writes
   * anything. The operation runs inside the savepoint, so that a statement of its that fails
   * aborts only the savepoint's subtransaction: the transaction, and with it the row lock
   * taken before, lives on until it is rolled back (a failed statement at the top level
   * would release every lock at once, while the operation may still run, and a duplicate
   * could take the key over as soon as the stored lease passed). A serialization failure or a
   * deadlock of the lock (a heartbeat that committed as the snapshot was taken) is retried
   * in a new transaction, a few times. Throws `LeaseLostError` (never an outcome) when the
   * record is no longer this execution's, `TransactionNotCommittedError` when the
   * transaction could not start; either way the connection is given back or dropped.
   */
  async begin(beginSql: string, hold: HoldRecordSql): Promise<void> {
    const timeoutMs = this.store.statementTimeoutMs;
    for (let tries = 1; ; tries++) {
      let held: boolean;
      try {
        let tid: string | undefined;
        if (hold.tid !== undefined) {
          const found = await runStatement(this.client, 'begin', { text: hold.tid }, timeoutMs);
          tid = secondResult<{ tid: string }>(found)[0]?.tid;
          // Not the caller's any more; no transaction is open (that one committed).
          if (tid === undefined) return this.lost(false);
        }
        const results = await runStatement(
          this.client,
          'begin',
          {
            text: `${beginSql}; ${hold.lock(tid)}; ${idleLimit(this.idleLimitMs)}; SAVEPOINT ${OPERATION_SAVEPOINT}`,
          },
          timeoutMs,
        );
        const row = secondResult<{ fence: unknown; xid: unknown }>(results)[0];
        held = row?.fence != null;
        this.xid = typeof row?.xid === 'string' ? row.xid : undefined;
      } catch (error) {
        const code = ((error as { cause?: { code?: unknown } }).cause as { code?: unknown })?.code;
        if (RETRIABLE.has(code as string) && tries < MAX_BEGIN_TRIES && !this.broken) {
          try {
            await runStatement(this.client, 'rollback', { text: 'ROLLBACK' }, timeoutMs);
            continue;
          } catch {
            // The connection is not usable: given up below.
          }
        }
        this.discard(error);
        this.forget();
        throw new TransactionNotCommittedError('Could not start the business transaction', {
          cause: error,
        });
      }
      if (!held) return this.lost(true);
      this.locked = true;
      this.guardUploads();
      return;
    }
  }

  /** From the lock on: the operation's large statements are sent under an upload guard. */
  private guardUploads(): void {
    const pid = (this.client as { processID?: unknown }).processID;
    const xid = this.xid;
    const uploads = this.armUpload;
    if (!uploads || typeof pid !== 'number' || xid === undefined) return;
    this.uploads = UploadGuard.install(
      this.client,
      (limitMs) => uploads.arm({ pid, xid }, limitMs),
      uploads.holdMs,
    );
  }

  /**
   * Core called the lease lost while the transaction was being opened (a wait for a pool
   * connection, a slow BEGIN): the row is held now, but heartbeats have ended, so the
   * transaction's idle limit would end it and a retry take the key over while the operation
   * ran. Ends the transaction before the operation starts; `LeaseLostError`, never an outcome.
   */
  notStarted(): Promise<never> {
    return this.lost(
      true,
      'The lease was lost while the business transaction was being opened; the operation did not run',
    );
  }

  /** The record is not this execution's any more: ends the transaction, `LeaseLostError`. */
  private async lost(
    open: boolean,
    message = 'The key was taken over (or given up) before the business transaction could hold it; the operation did not run',
  ): Promise<never> {
    this.phase = 'done';
    this.forget();
    if (open) await this.endWith('ROLLBACK');
    else this.giveBack();
    const lost = new LeaseLostError(message);
    beforeOperation.add(lost);
    throw lost;
  }

  /**
   * Whether the transaction holds the record's row now: `held` (nobody can take the key
   * over), `lost` (it held it, but its connection broke or was dropped: it can no longer
   * commit, and the row is free), or `none` (not locked yet, or the transaction ended).
   */
  rowState(): 'held' | 'lost' | 'none' {
    if (!this.locked) return 'none';
    if (this.broken || this.gone) return 'lost';
    // The operation ended the transaction itself (a COMMIT on tx): the row is free, so the
    // lease must be renewed in the store again. (A new transaction it began is not seen
    // here; the completion sees it.)
    return this.endedSeen() ? 'none' : 'held';
  }

  private transactionStatus(): string | null | undefined {
    return transactionStatus(this.client);
  }

  /**
   * After the operation threw (or returned an outcome the policy does not call final, which
   * core releases): ends the transaction and answers whose it was when it ended:
   *
   * - `ours`: still this engine's, rolled back (one round trip, as the plain `ROLLBACK` it
   *   replaces; see `rollbackIfOurs`), or known not to have committed: nothing of the
   *   operation's writes is in;
   * - `ended`: the operation ended it itself, positively seen (the client reported idle
   *   after the lock, the id check answered another transaction, or the server reads it
   *   `committed`): its writes may be in, never a release;
   * - `undecided`: nobody could tell (the connection broke or went silent and the server
   *   did not answer through the pool either). Nothing is decided then: the execution stays
   *   registered and the completion core sends next reads the status once the server
   *   answers (see `decide`); never a false "ended", never a blind release.
   *
   * A broken or failed connection is dropped before the pool is asked: a pool at its
   * maximum may need that very slot to answer.
   */
  async rollBackAfterOperation(): Promise<'ours' | 'ended' | 'undecided'> {
    if (this.phase !== 'open') return 'ours';
    const xid = this.xid;
    if (xid === undefined) {
      await this.rollback();
      return 'ours';
    }
    const seen = this.endedSeen();
    this.phase = 'done';
    if (this.broken || this.gone || seen) {
      // Rolls back what it left open (or drops the broken connection first).
      if (!(this.broken || this.gone) && this.transactionStatus() === 'I') this.giveBack();
      else await this.endWith('ROLLBACK');
      this.locked = false;
      return seen ? this.decided('ended') : this.fateAfter(xid);
    }
    let ours: boolean;
    try {
      ours = await rollbackIfOurs(this.client, xid, this.store.statementTimeoutMs);
      this.giveBack();
    } catch (error) {
      this.discard(error);
      this.locked = false;
      return this.fateAfter(xid);
    }
    this.locked = false;
    return this.decided(ours ? 'ours' : 'ended');
  }

  private decided(answer: 'ours' | 'ended'): 'ours' | 'ended' {
    this.forget();
    return answer;
  }

  /** The transaction's status read through the pool (its connection is gone): see above. */
  private async fateAfter(xid: string): Promise<'ours' | 'ended' | 'undecided'> {
    const fate = await transactionFate(this.store.pool, xid, this.store.statementTimeoutMs).catch(
      () => undefined,
    );
    if (fate === 'committed') return this.decided('ended');
    if (fate === 'aborted') return this.decided('ours');
    this.phase = 'undecided';
    return 'undecided';
  }

  /**
   * Core's final write for an undecided execution: the transaction's status, read through
   * the pool, decides. `committed`: the operation committed it itself, so its outcome is
   * recorded (owner-checked), whatever the policy. `aborted`: nothing committed, so as
   * without this engine's check: recorded when the policy calls it final, else the key is
   * released (`TransactionNotCommittedError`). Still open on the server, or no answer:
   * `StoreUnavailableError`, so that core repeats the write (heartbeats go on) and this is
   * asked again; core's maximum hold bounds it (then the key is left to its lease).
   */
  private decideOnce(input: CompleteInput): Promise<OwnerWriteResult> {
    if (!this.deciding) {
      const deciding = this.decide(input);
      this.deciding = deciding;
      deciding.catch(() => {
        if (this.deciding === deciding && this.phase === 'undecided') this.deciding = undefined;
      });
    }
    return this.deciding;
  }

  private async decide(input: CompleteInput): Promise<OwnerWriteResult> {
    const fate = await transactionFate(
      this.store.pool,
      this.xid as string,
      this.store.statementTimeoutMs,
    );
    let written: OwnerWriteResult;
    if (fate === 'committed' || (fate === 'aborted' && this.finalByPolicy)) {
      if (fate === 'committed') warnEnded();
      written = await this.store.complete(input);
    } else if (fate === 'aborted') {
      written = await this.store.release({
        key: input.key,
        owner: input.owner,
        retentionMs: this.retentionMs,
      });
      this.phase = 'done';
      this.forget();
      if (written.ok)
        throw new TransactionNotCommittedError(
          'The business transaction did not commit; nothing was recorded and the key was released',
          { cause: this.thrown },
        );
      return NOT_OWNER;
    } else {
      throw new StoreUnavailableError(
        `Whether the business transaction committed cannot be told yet (the server reads it ${fate ?? 'unknown'}); asked again`,
      );
    }
    this.phase = 'done';
    this.forget();
    return written;
  }

  /**
   * A heartbeat while the row is held and the operation runs. The row lock keeps every
   * takeover out while the transaction lives, but nothing tells a takeover how long it will:
   * the server may end it at any time (its idle limit for an owner gone silent, an operator's
   * kill, a proxy that closed its side), and the record's own lease cannot be renewed while
   * its row is locked, so it is the acquisition's, long passed in a long operation. So the
   * heartbeat renews, through the engine's renewal routes (never waiting for the pool), the
   * held lease that a takeover honours besides the record's (`renewHeld`), owner-checked by the acquisition's fence: `held` when renewed (core
   * counts the lease from the heartbeat's start, as for any store), `lost` when the record is
   * another's, a thrown `StoreUnavailableError` when the server does not answer (a failed
   * renewal). It also sends `SELECT 1` on the transaction's connection (none while the last
   * is unanswered): that restarts the server's idle timer, which ends the transaction of an
   * owner gone silent (the idle limit set at `BEGIN`), never a live one's; it runs inside the
   * operation's savepoint and cannot fail there (no table, no privilege), so it never breaks
   * the operation. `free` when the operation ended the transaction itself (renew in the store).
   */
  async heartbeat(input: ExtendInput): Promise<'held' | 'lost' | 'free'> {
    const row = this.rowState();
    if (row === 'lost') return 'lost';
    if (row === 'none' || this.phase !== 'open') return 'free';
    this.ping();
    const renewed = await this.store.renewHeld(input, this.fence, this.side.repeatable);
    return renewed === undefined ? 'lost' : 'held';
  }

  /** {@link HEARTBEAT_SQL} on the transaction's connection, unless one is on its way. */
  private ping(): void {
    if (this.pinging || this.gone || this.broken) return;
    this.pinging = true;
    this.client.query(HEARTBEAT_SQL).then(
      () => {
        this.pinging = false;
      },
      () => {
        this.pinging = false;
      },
    );
  }

  /**
   * Ends the transaction from outside while the operation may still run (the maximum hold
   * passed): the connection is dropped, so the server rolls the transaction back and lets
   * the row go; the operation's next statement fails and the completion settles as for any
   * connection lost before `COMMIT`.
   */
  abort(reason: Error): void {
    if (this.phase !== 'open' || this.broken) return;
    this.broken = reason;
    // Dropping the connection alone leaves a statement still running on the server (one the
    // operation allowed a long statement_timeout) running, with the row locked, until it
    // ends. So the backend is terminated first (through the renewal routes), while the
    // connection is still open: the pid is then certainly still this transaction's backend.
    // Once the transaction's id is known the statement names it too, so that it may be sent
    // again (a pool connection that left it unanswered) without ever ending another backend
    // that took the pid meanwhile; before, it is sent once.
    const pid = (this.client as { processID?: unknown }).processID;
    if (typeof pid === 'number' && !this.gone) {
      const xid = this.xid;
      this.terminating = runStatement(
        xid === undefined ? this.side : this.side.repeatable,
        'abort',
        terminationOf(pid, xid),
        this.store.statementTimeoutMs,
      ).then(
        () => {},
        () => {},
      );
    }
    this.drop(reason);
  }

  /** Core's final write for this execution (see the class comment). */
  complete(input: CompleteInput): Promise<OwnerWriteResult> {
    if (this.phase === 'undecided') return this.decideOnce(input);
    if (this.phase === 'open') {
      const limit = this.store.capabilities.maxOutcomeBytes ?? Number.POSITIVE_INFINITY;
      // Refused before the transaction is touched: core then records a marker in it.
      if (input.outcome.length > limit) return this.store.complete(input);
      this.phase = 'finishing';
      this.commitStage = 'completing';
      this.result = this.commit(input);
      return this.result;
    }
    // Core repeats the write after a timeout or a failure: the same attempt while it runs,
    // a new settling after one that failed to reach the store.
    const current = this.result ?? Promise.resolve(NOT_OWNER);
    return current.catch((error: unknown) => {
      if (!(error instanceof StoreUnavailableError)) throw error;
      if (this.result === current) this.result = this.settle(input, error);
      return this.result as Promise<OwnerWriteResult>;
    });
  }

  /**
   * What the caller is told when core's wait for the completion ran out (`error`, core's
   * `StoreUnavailableError` "not recorded yet") while this transaction's completion is
   * still unsettled, instead of that error: `CommitOutcomeUnknownError` once `COMMIT` was
   * sent; `TransactionNotCommittedError` before (and `COMMIT` is then never sent, so that it
   * stays true). `undefined` when the completion is not what failed.
   */
  unsettledError(error: unknown, waitedMs: number): IdemError | undefined {
    if (!(error instanceof StoreUnavailableError)) return undefined;
    if (this.commitStage === 'commit_sent')
      return new CommitOutcomeUnknownError(waitedMs, { cause: error });
    if (this.commitStage !== 'completing') return undefined;
    // The operation committed the engine's transaction itself (seen on the connection): its
    // writes are in and the completion records its outcome outside it, never a release, so
    // "did not commit" would be false; core's own words ("not recorded yet") stay true.
    if (this.seenIdle || this.commitSeen) return undefined;
    this.commitRefused = true;
    return new TransactionNotCommittedError(
      `The business transaction did not commit: its completion got no answer within ${waitedMs} ms and COMMIT will not be sent. Nothing of it is recorded; the key is released in the background once the server answers (a retry meanwhile gets IN_PROGRESS or STORE_UNAVAILABLE), then a retry runs the operation once`,
      { cause: error },
    );
  }

  /** Rolls back and gives the connection back; for an operation that threw, or a release. */
  async rollback(): Promise<void> {
    if (this.phase !== 'open') return;
    this.phase = 'done';
    this.forget();
    await this.endWith('ROLLBACK');
    // Rolled back, or its connection dropped (the server rolls it back): no longer held.
    this.locked = false;
  }

  private async commit(input: CompleteInput): Promise<OwnerWriteResult> {
    let written: OwnerWriteResult | 'other_transaction';
    try {
      if (this.broken) throw this.broken;
      if (this.xid === undefined) written = await this.store.completeIn(this.client, input);
      else if (this.transactionStatus() === 'I') written = 'other_transaction';
      else written = await this.store.completeInTransaction(this.client, input, this.xid);
    } catch (error) {
      // A failed transaction (the operation caught an error of its statement and returned):
      // nothing of it can commit, unless the operation had committed it and began another.
      if (!this.broken && this.xid !== undefined && this.transactionStatus() === 'E') {
        let ours: boolean | undefined;
        try {
          ours = await rollbackIfOurs(this.client, this.xid, this.store.statementTimeoutMs);
          this.giveBack();
        } catch (rollbackError) {
          this.discard(rollbackError);
        }
        if (ours === false) return this.completeOutside(input);
        // Unknown (the connection failed): the settling reads the transaction's status first.
        return this.settle(input, error, ours === undefined);
      }
      // The completion never reached COMMIT: the transaction cannot commit any more.
      this.discard(error);
      return this.settle(input, error);
    }
    if (written === 'other_transaction') return this.completeOutside(input);
    if (this.commitRefused) {
      // The caller was told this transaction did not commit (its completion answered too
      // late): it never commits now. Dropped, so the server rolls it back; then released.
      const late = new Error('COMMIT not sent: the caller was told the transaction did not commit');
      this.discard(late);
      return this.settle(input, late, false);
    }
    if (!written.ok) {
      // Taken over after the lease passed: the business writes roll back with it.
      this.phase = 'done';
      this.forget();
      await this.endWith('ROLLBACK');
      return NOT_OWNER;
    }
    try {
      this.commitStage = 'commit_sent';
      const answer = await runStatement(
        this.client,
        'commit',
        { text: 'COMMIT' },
        this.store.statementTimeoutMs,
      );
      // COMMIT of a transaction that failed on the way answers ROLLBACK.
      if (answer.command !== 'COMMIT') throw new Error(`COMMIT answered ${answer.command}`);
    } catch (error) {
      this.discard(error);
      return this.settle(input, error);
    }
    this.commitStage = 'settled';
    this.phase = 'done';
    this.locked = false;
    this.forget();
    this.giveBack();
    return OK;
  }

  /**
   * The operation returned, but it had ended the transaction itself (`COMMIT`, `ROLLBACK`,
   * `COMMIT AND CHAIN`, `COMMIT; BEGIN` ... sent on `tx`): what it wrote before may have
   * committed, so "nothing was recorded, the key is free" would let a retry write it again.
   * Its outcome is recorded instead: inside the transaction it left open, if any (with
   * what it wrote there), else on its own; either way owner-checked (the row was free
   * meanwhile: a takeover answers `not_owner`). A failed completion in it falls back to the
   * plain completion, which a completion that did commit answers `ok` (same owner, same
   * bytes), and core repeats it while the store is unavailable: never a release.
   */
  private async completeOutside(input: CompleteInput): Promise<OwnerWriteResult> {
    // Not this engine's COMMIT: core's own words ("not recorded yet") stay true for it.
    this.commitStage = 'none';
    this.phase = 'done';
    this.locked = false;
    this.forget();
    if (this.broken) this.drop(this.broken);
    warnEnded();
    if (!this.gone && this.transactionStatus() === 'T') {
      try {
        const written = await this.store.completeIn(this.client, input);
        const answer = await runStatement(
          this.client,
          'commit',
          { text: written.ok ? 'COMMIT' : 'ROLLBACK' },
          this.store.statementTimeoutMs,
        );
        if (!written.ok) {
          this.giveBack();
          return NOT_OWNER;
        }
        if (answer.command === 'COMMIT') {
          this.giveBack();
          return OK;
        }
      } catch (error) {
        this.discard(error);
      }
    }
    if (this.gone) {
      // Dropped already.
    } else if (this.transactionStatus() === 'I') this.giveBack();
    else await this.endWith('ROLLBACK');
    return this.store.complete(input);
  }

  /** Whether the transaction committed, read from the record (see the class comment). */
  private async settle(
    input: CompleteInput,
    cause: unknown,
    readFate = true,
  ): Promise<OwnerWriteResult> {
    // The transaction committed (its COMMIT's answer was lost, or the operation committed it
    // itself): never a release. The owner-checked completion answers ok for a record this
    // owner completed with these bytes (store rule 7), and records the outcome of an
    // operation that committed its own writes; a takeover answers not_owner. A failure to
    // tell is thrown (StoreUnavailableError): core repeats the write, which settles again.
    if (readFate && this.xid !== undefined) {
      const fate = await transactionFate(this.store.pool, this.xid, this.store.statementTimeoutMs);
      if (fate === 'committed') {
        this.phase = 'done';
        this.locked = false;
        this.forget();
        const written = await this.store.complete(input);
        this.commitStage = 'settled';
        return written;
      }
    }
    const released = await this.store.release({
      key: input.key,
      owner: input.owner,
      retentionMs: this.retentionMs,
    });
    // The release waited for the row: the transaction has ended on the server.
    this.phase = 'done';
    this.locked = false;
    this.commitStage = 'settled';
    if (released.ok) {
      this.forget();
      throw new TransactionNotCommittedError(
        'The business transaction did not commit; nothing was recorded and the key was released',
        { cause },
      );
    }
    const record = await this.store.get(input.key);
    this.forget();
    return record?.status === 'completed' &&
      record.owner === input.owner &&
      sameBytes(record.outcome, input.outcome)
      ? OK
      : NOT_OWNER;
  }

  private async endWith(sql: 'ROLLBACK'): Promise<void> {
    try {
      if (this.broken) throw this.broken;
      await runStatement(this.client, 'rollback', { text: sql }, this.store.statementTimeoutMs);
      this.giveBack();
    } catch (error) {
      this.discard(error);
    }
  }

  private giveBack(): void {
    this.gone = true;
    this.uploads?.uninstall();
    this.client.off('error', this.onError);
    this.client.off('end', this.onEnd);
    this.connection()?.off('readyForQuery', this.onReady);
    this.connection()?.off('commandComplete', this.onCommandComplete);
    this.client.release();
  }

  /** Drops the connection (the pool closes it): its transaction ends on the server. */
  discard(error: unknown): void {
    this.phase = this.phase === 'open' ? 'done' : this.phase;
    this.drop(error);
  }

  private drop(error: unknown): void {
    if (this.gone) return;
    this.gone = true;
    this.uploads?.uninstall(true);
    this.client.off('error', this.onError);
    this.client.off('end', this.onEnd);
    this.connection()?.off('readyForQuery', this.onReady);
    this.connection()?.off('commandComplete', this.onCommandComplete);
    // A listener stays until the socket is gone: a late error must not crash the process.
    this.client.on('error', () => {});
    const release = () => {
      try {
        this.client.release(error instanceof Error ? error : new InvalidInputError(String(error)));
      } catch {
        // Released already (pg throws on a second release): nothing more to free.
      }
    };
    // After the termination answered (bounded): the pid must not be reused meanwhile.
    if (this.terminating) void this.terminating.then(release);
    else release();
  }
}

/**
 * The statement that ends a transaction's backend: by its pid alone, or, once the
 * transaction's id (`txid_current()`) is known, by its pid and that id, which a backend that
 * took the pid after this one ended never has (so it may be sent twice).
 * @internal
 */
export function terminationOf(pid: number, xid: string | undefined): QueryConfig {
  return xid === undefined
    ? { text: 'SELECT pg_terminate_backend($1)', values: [pid] }
    : {
        text: `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND backend_xid::text = ($2::bigint % ${2 ** 32})::text`,
        values: [pid, xid],
      };
}
