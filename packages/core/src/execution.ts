import type { Clock } from './clock.js';
import { InvalidInputError, LeaseLostError, OutcomeTooLargeError } from './errors.js';
import type { IdemEventListener } from './events.js';
import { encodeOutcome, type StoredOutcome } from './outcome-codec.js';
import type { IdempotencyStore, OwnerWriteResult } from './store.js';
import { callStore } from './store-call.js';

/** Settings an {@link Execution} runs with (resolved options of the engine). */
export interface ExecutionSettings {
  store: IdempotencyStore;
  clock: Clock;
  leaseMs: number;
  heartbeatMs: number | false;
  maxHoldMs: number;
  retentionMs: number;
  storeTimeoutMs: number;
  emit: IdemEventListener;
}

/**
 * One acquisition of a storage key: the right to run the operation once and record its
 * outcome. Holds the lease with heartbeats until `complete` or `release` is called.
 */
export class Execution {
  /** Fencing token: pass it to downstream writes so they can reject a stale executor. */
  readonly fence: number;
  /** Aborts when the lease is lost (or may have been: renewal failed past the deadline, or max hold passed). */
  readonly signal: AbortSignal;
  /** True when this acquisition took over a passed lease of another owner. */
  readonly takeover: boolean;

  private readonly controller = new AbortController();
  private readonly acquiredAt: number;
  private leaseEstimate: number;
  private heartbeatTimer: ReturnType<typeof setTimeout> | undefined;
  private watchdogTimer: ReturnType<typeof setTimeout> | undefined;
  private settled = false;
  private abandoned = false;

  /** @internal created by the engine after a successful acquire */
  constructor(
    private readonly settings: ExecutionSettings,
    readonly storageKey: string,
    readonly owner: string,
    init: { fence: number; takeover: boolean; callStartedAt: number },
  ) {
    this.fence = init.fence;
    this.takeover = init.takeover;
    this.signal = this.controller.signal;
    this.acquiredAt = init.callStartedAt;
    // The store started the lease no earlier than the call was sent: a safe lower bound.
    this.leaseEstimate = init.callStartedAt + settings.leaseMs;
    this.armWatchdog();
    this.scheduleHeartbeat();
  }

  /**
   * Stops renewing the lease without releasing the key: the lease then runs out by itself
   * and a retry may take over, while a late `complete` still succeeds if nobody did. For
   * callers that can no longer tell whether the operation will finish (a response body
   * nobody reads), where releasing at once could let a retry run it a second time.
   */
  abandon(): void {
    this.abandoned = true;
    clearTimeout(this.heartbeatTimer);
  }

  /** Whether `complete` or `release` has been called. */
  get finished(): boolean {
    return this.settled;
  }

  /**
   * Records the final outcome. Throws `LeaseLostError` when another execution took the key
   * over (its record is left untouched), `OutcomeTooLargeError` when the store cannot hold
   * the outcome (the key is then released so a retry may run again), and
   * `StoreUnavailableError` when the store failed: the record then stays in progress until
   * its lease passes, so retries get 409 rather than a second execution.
   */
  async complete(outcome: StoredOutcome): Promise<void> {
    this.finish();
    const { store, retentionMs } = this.settings;
    const bytes = encodeOutcome(outcome);
    const limit = store.capabilities.maxOutcomeBytes;
    if (limit !== undefined && bytes.length > limit) {
      await this.releaseQuietly();
      throw new OutcomeTooLargeError(bytes.length, limit);
    }
    try {
      await this.ownerWrite('complete', () =>
        store.complete({ key: this.storageKey, owner: this.owner, outcome: bytes, retentionMs }),
      );
    } catch (error) {
      if (error instanceof OutcomeTooLargeError) await this.releaseQuietly();
      throw error;
    }
  }

  /**
   * Gives the key up so that a retry executes again. Throws `LeaseLostError` when another
   * execution owns the key now (nothing was changed) and `StoreUnavailableError` when the
   * store failed (the record stays in progress until its lease passes).
   */
  async release(): Promise<void> {
    this.finish();
    await this.releaseRecord();
  }

  private releaseRecord(): Promise<void> {
    const { store, retentionMs } = this.settings;
    return this.ownerWrite('release', () =>
      store.release({ key: this.storageKey, owner: this.owner, retentionMs }),
    );
  }

  /**
   * One owner-checked write: reports a store failure or a lost lease as an event and a
   * typed error, and success as a `completed` or `released` event.
   */
  private async ownerWrite(
    operation: 'complete' | 'release',
    write: () => Promise<OwnerWriteResult>,
  ): Promise<void> {
    const { storageKey, fence } = this;
    let result: OwnerWriteResult;
    try {
      result = await callStore(operation, this.settings.storeTimeoutMs, write);
    } catch (error) {
      if (!(error instanceof OutcomeTooLargeError)) {
        this.settings.emit({ type: 'store_error', storageKey, operation, error });
      }
      throw error;
    }
    if (!result.ok) {
      this.settings.emit({ type: 'lease_lost', storageKey, fence, phase: operation });
      throw new LeaseLostError(
        operation === 'complete'
          ? 'The outcome was not recorded: another execution took this key over after the lease passed'
          : undefined,
      );
    }
    this.settings.emit({
      type: operation === 'complete' ? 'completed' : 'released',
      storageKey,
      fence,
    });
  }

  private async releaseQuietly(): Promise<void> {
    try {
      await this.releaseRecord();
    } catch {
      // Reported through events; the caller gets the error that made us release.
    }
  }

  private finish(): void {
    if (this.settled)
      throw new InvalidInputError('This execution was already completed or released');
    this.settled = true;
    clearTimeout(this.heartbeatTimer);
    clearTimeout(this.watchdogTimer);
  }

  private lose(phase: 'heartbeat' | 'max_hold', message: string): void {
    if (this.controller.signal.aborted) return;
    this.settings.emit({
      type: 'lease_lost',
      storageKey: this.storageKey,
      fence: this.fence,
      phase,
    });
    this.controller.abort(new LeaseLostError(message));
  }

  private armWatchdog(): void {
    clearTimeout(this.watchdogTimer);
    const delay = Math.max(0, this.leaseEstimate - this.settings.clock.now());
    this.watchdogTimer = setTimeout(() => {
      if (this.settled) return;
      const holdPassed = this.settings.clock.now() - this.acquiredAt >= this.settings.maxHoldMs;
      this.lose(
        holdPassed ? 'max_hold' : 'heartbeat',
        holdPassed
          ? 'The maximum hold time passed; the lease was not renewed'
          : 'The lease could not be renewed before it passed',
      );
    }, delay);
    this.watchdogTimer.unref?.();
  }

  private scheduleHeartbeat(): void {
    const { heartbeatMs } = this.settings;
    if (heartbeatMs === false || this.settled || this.abandoned) return;
    this.heartbeatTimer = setTimeout(() => void this.beat(), heartbeatMs);
    this.heartbeatTimer.unref?.();
  }

  private async beat(): Promise<void> {
    if (this.settled || this.abandoned || this.controller.signal.aborted) return;
    const { store, clock, leaseMs, retentionMs, maxHoldMs, storeTimeoutMs } = this.settings;
    const startedAt = clock.now();
    // Never renew past the maximum hold: the last renewal is cut to what is left of it.
    const lease = Math.min(leaseMs, this.acquiredAt + maxHoldMs - startedAt);
    if (lease <= 0) return; // let the lease lapse; the watchdog aborts
    try {
      const result = await callStore('extend', storeTimeoutMs, () =>
        store.extend({ key: this.storageKey, owner: this.owner, leaseMs: lease, retentionMs }),
      );
      if (this.settled) return;
      if (!result.ok) {
        this.lose('heartbeat', 'Another execution took this key over');
        return;
      }
      this.leaseEstimate = startedAt + lease;
      this.armWatchdog();
    } catch (error) {
      if (this.settled) return;
      this.settings.emit({
        type: 'store_error',
        storageKey: this.storageKey,
        operation: 'extend',
        error,
      });
    }
    this.scheduleHeartbeat();
  }
}
