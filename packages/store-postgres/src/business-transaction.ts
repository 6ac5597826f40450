import {
  type CompleteInput,
  IdemError,
  InvalidInputError,
  LeaseLostError,
  type OwnerWriteResult,
  StoreUnavailableError,
} from '@idem/core';
import type { PoolClient } from 'pg';
import type { HoldRecordSql } from './hold-record-sql.js';
import type { PostgresStore } from './options.js';
import { runStatement } from './pg-call.js';

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
  }
}

/**
 * Errors of the engine's own that end an execution before its operation ran (the key was
 * lost before the transaction could hold it): never an outcome, whatever the policy says.
 */
export const beforeOperation = new WeakSet<object>();

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
  phase: 'open' | 'finishing' | 'done' = 'open';
  private result: Promise<OwnerWriteResult> | undefined;
  private broken: Error | undefined;
  /** The transaction holds the record's row (from the lock after BEGIN to its end). */
  private locked = false;
  /** The connection was given back or dropped. */
  private gone = false;
  private readonly onError = (error: Error) => {
    // The connection died (a terminated backend, a reset): the transaction cannot commit.
    this.broken = error;
  };

  constructor(
    private readonly store: PostgresStore,
    readonly client: PoolClient,
    readonly storageKey: string,
    readonly owner: string,
    private readonly retentionMs: number,
    private readonly forget: () => void,
  ) {
    client.on('error', this.onError);
  }

  /**
   * Sends `BEGIN ...` and, in the same round trip, the lock of the record's row (`lockSql`):
   * from here until the transaction ends nobody can take the key over, and a key lost
   * before is known before the operation writes anything. A serialization failure or a
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
          { text: `${beginSql}; ${hold.lock(tid)}` },
          timeoutMs,
        );
        held = secondResult<{ fence: unknown }>(results)[0]?.fence != null;
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
      return;
    }
  }

  /** The record is not this execution's any more: ends the transaction, `LeaseLostError`. */
  private async lost(open: boolean): Promise<never> {
    this.phase = 'done';
    this.forget();
    if (open) await this.endWith('ROLLBACK');
    else this.giveBack();
    const lost = new LeaseLostError(
      'The key was taken over (or given up) before the business transaction could hold it; the operation did not run',
    );
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
    return this.broken || this.gone ? 'lost' : 'held';
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
    this.drop(reason);
  }

  /** Core's final write for this execution (see the class comment). */
  complete(input: CompleteInput): Promise<OwnerWriteResult> {
    if (this.phase === 'open') {
      const limit = this.store.capabilities.maxOutcomeBytes ?? Number.POSITIVE_INFINITY;
      // Refused before the transaction is touched: core then records a marker in it.
      if (input.outcome.length > limit) return this.store.complete(input);
      this.phase = 'finishing';
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
    let written: OwnerWriteResult;
    try {
      if (this.broken) throw this.broken;
      written = await this.store.completeIn(this.client, input);
    } catch (error) {
      // The completion never reached COMMIT: the transaction cannot commit any more.
      this.discard(error);
      return this.settle(input, error);
    }
    if (!written.ok) {
      // Taken over after the lease passed: the business writes roll back with it.
      this.phase = 'done';
      this.forget();
      await this.endWith('ROLLBACK');
      return NOT_OWNER;
    }
    try {
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
    this.phase = 'done';
    this.locked = false;
    this.forget();
    this.giveBack();
    return OK;
  }

  /** Whether the transaction committed, read from the record (see the class comment). */
  private async settle(input: CompleteInput, cause: unknown): Promise<OwnerWriteResult> {
    const released = await this.store.release({
      key: input.key,
      owner: input.owner,
      retentionMs: this.retentionMs,
    });
    // The release waited for the row: the transaction has ended on the server.
    this.phase = 'done';
    this.locked = false;
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
    this.client.off('error', this.onError);
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
    this.client.off('error', this.onError);
    // A listener stays until the socket is gone: a late error must not crash the process.
    this.client.on('error', () => {});
    try {
      this.client.release(error instanceof Error ? error : new InvalidInputError(String(error)));
    } catch {
      // Released already (pg throws on a second release): nothing more to free.
    }
  }
}
