import {
  type CompleteInput,
  IdemError,
  InvalidInputError,
  type OwnerWriteResult,
  StoreUnavailableError,
} from '@idem/core';
import type { PoolClient } from 'pg';
import type { PostgresStore } from './options.js';
import { runStatement } from './pg-call.js';

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

  /** Sends `BEGIN ...`; on failure the connection is dropped and the error is typed. */
  async begin(sql: string): Promise<void> {
    try {
      await runStatement(this.client, 'begin', { text: sql }, this.store.statementTimeoutMs);
    } catch (error) {
      this.discard(error);
      this.forget();
      throw new TransactionNotCommittedError('Could not start the business transaction', {
        cause: error,
      });
    }
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
    this.phase = 'done';
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
    this.client.off('error', this.onError);
    this.client.release();
  }

  /** Drops the connection (the pool closes it): its transaction ends on the server. */
  discard(error: unknown): void {
    this.phase = this.phase === 'open' ? 'done' : this.phase;
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
