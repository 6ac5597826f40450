import { BackgroundTasks } from './background.js';
import { type Clock, elapsedClock } from './clock.js';
import {
  InvalidInputError,
  LeaseLostError,
  type NotRecordedReason,
  OutcomeNotRecordedError,
  OutcomeTooLargeError,
  StoreFullError,
  StoreUnavailableError,
  shownValue,
} from './errors.js';
import type { EventSink } from './events.js';
import { ExecutionReport } from './execution-report.js';
import type { FixedDelayTimers } from './fixed-delay-timers.js';
import type { GiveBacks } from './give-back.js';
import { originIdOf } from './keys.js';
import { LeaseKeeper } from './lease-keeper.js';
import {
  isNotRecordedReason,
  NOT_RECORDED_REASONS,
  type NotRecordedDetails,
  noteMarkerFailure,
  notRecordedOutcome,
  plainNotRecorded,
} from './not-recorded.js';
import {
  encodeOutcome,
  encodeOutcomeWith,
  giveBackReused,
  isReusedBuffer,
  type StoredOutcome,
} from './outcome-codec.js';
import { codecCall, type OutcomeCodec } from './outcome-sealing.js';
import { stringifiesOneByte } from './platform.js';
import { encodeJsonText, jsonValueLatin1 } from './serializer.js';
import type { CompleteInput, IdempotencyStore, OwnerWriteResult } from './store.js';
import {
  callStore,
  callStoreSync,
  copiesInputOf,
  latin1OutcomeFormOf,
  syncFormOf,
} from './store-call.js';
import { retryStoreCall } from './store-retry.js';
import { latin1Bytes } from './utf8.js';

/** Settings an {@link Execution} runs with (resolved options of the engine). */
export interface ExecutionSettings extends EventSink {
  store: IdempotencyStore;
  clock: Clock;
  leaseMs: number;
  heartbeatMs: number | false;
  maxHoldMs: number;
  retentionMs: number;
  storeTimeoutMs: number;
  /**
   * Largest encoded outcome `complete` records, in bytes: the smaller of the
   * `maxOutcomeBytes` option and the store's own limit. Integrations that capture a streamed
   * outcome stop capturing past it and call `completeNotRecorded('too_large', ...)`.
   */
  maxOutcomeBytes: number;
  /** How long `complete` retries a failing final write before it rejects (and goes on in the background), in ms. */
  completionWaitMs: number;
  /** Seals outcomes before the store and opens them after (the `outcomeCodec` option). */
  codec: OutcomeCodec | undefined;
}

/**
 * One acquisition of a storage key: the right to run the operation once and record its
 * outcome. Holds the lease with heartbeats until the final write has landed (or
 * `release` is called, or the execution is abandoned).
 */
export class Execution {
  /** Fencing token: pass it to downstream writes so they can reject a stale executor. */
  readonly fence: number;
  /** True when this acquisition took over a passed lease of another owner. */
  readonly takeover: boolean;
  /**
   * Owner token of the acquisition that began this logical request, as the store keeps it
   * (this execution's own `owner` when the key was free). Internal: a store secret; use
   * {@link originId}.
   */
  readonly origin: string;
  #originId: string | undefined;
  /** The request's operation (the scope's operation), as reported in events. */
  readonly operation: string | undefined;

  private readonly acquiredAt: number;
  private readonly tasks: BackgroundTasks;
  private readonly lease: LeaseKeeper;
  private lastStoreError: StoreUnavailableError | undefined;
  private readonly giveBacks: GiveBacks | undefined;
  /** Events of this acquisition; none (and nothing built) when nobody listens. */
  private readonly report: ExecutionReport | undefined;

  /** @internal created by the engine after a successful acquire */
  constructor(
    private readonly settings: ExecutionSettings,
    readonly storageKey: string,
    readonly owner: string,
    init: {
      fence: number;
      takeover: boolean;
      /** The store's `origin` for this acquisition. */
      origin: string;
      /** When the acquire was sent, on the engine's clock for durations (`elapsedClock`). */
      callStartedAt: number;
      /** The same on the monotonic clock, with an injected clock (see LeaseKeeper). */
      callStartedAtMono?: number | undefined;
      tasks?: BackgroundTasks;
      operation?: string | undefined;
      /** The engine's heartbeat queue (one Node timer for all its executions). */
      heartbeats?: FixedDelayTimers | undefined;
      /** How long the acquire call took to answer (ms, on that clock); 0 when unknown. */
      roundTrip?: number;
      /** The engine's give-backs: a release that failed in {@link refuseLateStart} is retried there. */
      giveBacks?: GiveBacks | undefined;
    },
  ) {
    this.giveBacks = init.giveBacks;
    this.fence = init.fence;
    this.takeover = init.takeover;
    this.origin = init.origin;
    this.operation = init.operation;
    this.acquiredAt = init.callStartedAt;
    this.report = settings.observed
      ? new ExecutionReport(settings, storageKey, init.operation, init.fence)
      : undefined;
    this.tasks = init.tasks ?? new BackgroundTasks();
    this.lease = new LeaseKeeper(
      settings,
      storageKey,
      owner,
      init.callStartedAt,
      this.report,
      init.heartbeats,
      init.roundTrip,
      init.callStartedAtMono,
    );
    this.lease.operation = init.operation;
    this.lease.fence = init.fence;
  }

  /**
   * The logical request's id: the same for every execution of it (a retry after a failure
   * or a release, a takeover after a crash or a lost lease), a new one once the key is used
   * again after its record's retention passed (a new request under an old key). Name what
   * the request creates elsewhere (a message id, a ledger row, a downstream idempotency
   * key) by it, and let the `fence` decide between its executions. 32 lowercase hex
   * characters, derived from the storage key and the store's origin token (which it does
   * not reveal); computed on first read.
   */
  get originId(): string {
    if (this.#originId === undefined) this.#originId = originIdOf(this.storageKey, this.origin);
    return this.#originId;
  }

  /** Aborts when the lease is lost (or may have been: renewal failed past the deadline, or max hold passed). */
  get signal(): AbortSignal {
    return this.lease.signal;
  }

  /**
   * Whether it is too late in the lease to start the operation: at or past the runway the
   * engine leaves an acquisition (a tenth of the lease, at most 1 s, before it may pass). An
   * event loop held up between the acquisition and the operation's start (a listener, other
   * callbacks, a synchronous stretch).
   */
  pastRunway(): boolean {
    return this.lease.pastRunway();
  }

  /**
   * Call right before the operation starts, when you run it yourself after `begin`: when it
   * is too late in the lease to start it ({@link pastRunway}), gives the key back (a release
   * that fails is retried in the background until the lease has passed) and returns the
   * `LeaseLostError` to answer with (a retry executes again; HTTP integrations answer 503);
   * else `undefined`, and the operation may start. `execute` does this itself: another
   * caller may take the key over once the lease passes, so an operation started that late
   * would run beside it. Answers within what is left of the lease (at least 10 ms), never
   * after `storeTimeoutMs`.
   * @throws InvalidInputError on an execution already completed, released or abandoned
   * (nothing is touched: it is a check for the start of the operation only).
   */
  async refuseLateStart(): Promise<LeaseLostError | undefined> {
    // Only before the operation: past the runway for good once the operation ran that long,
    // a finished or abandoned execution given back here would hand a retry the key while its
    // outcome is being written, or after `abandon` chose to let the lease run out (the
    // runrev2 review).
    if (this.lease.phase !== 'running' || this.lease.isAbandoned)
      throw new InvalidInputError(
        'refuseLateStart is called right before the operation starts: this execution was already completed, released or abandoned',
      );
    if (!this.lease.pastRunway()) return undefined;
    // The caller is answered within what is left of the lease (at least 10 ms), never after
    // `storeTimeoutMs` (the process is kept alive that long at most: the caller awaits the
    // answer): a release not answered by then, or failed, is given back in the background
    // (retried until the lease has passed, on unref'd timers), as a refused acquisition is
    // (the runrev2 review: a hanging release held the refusal, and the process, for the whole
    // store time limit).
    const within = Math.min(this.settings.storeTimeoutMs, Math.max(10, this.lease.leaseLeft()));
    try {
      await this.releaseWithin(within);
    } catch (error) {
      if (error instanceof StoreUnavailableError)
        this.giveBacks?.releaseIfApplied(
          this.storageKey,
          this.operation,
          this.owner,
          this.acquiredAt,
          undefined,
        );
    }
    return new LeaseLostError(
      `The operation would start too close to the end of its ${this.settings.leaseMs} ms lease (the event loop was held up since the acquisition): another caller may take the key over once it passes, so it did not run (the acquisition was given back)`,
    );
  }

  /**
   * Stops renewing the lease without releasing the key: the lease then runs out by itself
   * and a retry may take over, while a late `complete` still succeeds if nobody did. For
   * callers that can no longer tell whether the operation will finish (a response body
   * nobody reads), where releasing at once could let a retry run it a second time.
   */
  abandon(): void {
    this.lease.abandon();
  }

  /** Whether `complete`, `completeNotRecorded` or `release` has been called. */
  get finished(): boolean {
    return this.lease.phase !== 'running';
  }

  /**
   * Records the final outcome (owner-checked).
   *
   * When the store fails (`STORE_UNAVAILABLE`), the execution keeps the outcome and its
   * lease (heartbeats go on) and retries the same write with backoff until it lands, the
   * key is taken over, or `maxHoldMs` since the acquisition passes: better a late
   * completion than a second execution. This promise waits for that at most
   * `completionWaitMs`, then rejects with `StoreUnavailableError` while the retries go on
   * in the background (`drain()` waits for them).
   *
   * @throws LeaseLostError when another execution took the key over (its record is left
   *   untouched).
   * @throws OutcomeTooLargeError when the encoded (and sealed) outcome exceeds
   *   `maxOutcomeBytes` or the store's limit, and StoreFullError when the store is full: the
   *   operation ran, so the key is not released; a not-recorded marker is written instead
   *   (see `completeNotRecorded`).
   * @throws StoreUnavailableError when the write has not landed within `completionWaitMs`.
   * @throws OutcomeNotRecordedError (`not_serializable`) when `outcome` cannot be encoded
   *   (metadata that is not JSON, a body that is not bytes) or the `outcomeCodec` fails to
   *   seal it: a marker is written instead.
   */
  complete(outcome: StoredOutcome): Promise<void> {
    return this.completeNow(outcome) ?? Promise.resolve();
  }

  /**
   * {@link complete}, `undefined` when the outcome was recorded before this returned (a store
   * that answers at once): no promise is made for it (each costs more once promise hooks are
   * on, as an `AsyncLocalStorage` turns them on in Node 20; the twenty-sixth pass in
   * benchmarks/HISTORY.md). Never throws: what `complete` rejects with, this rejects with.
   * @internal for @idem/http's recorder
   */
  completeNow(outcome: StoredOutcome): Promise<void> | undefined {
    let bytes: Uint8Array;
    try {
      this.startFinishing();
      try {
        bytes = encodeOutcomeWith(outcome, this.mayReuseEncoding());
      } catch (cause) {
        return this.notSerializable(cause);
      }
      return this.recordEncoded(bytes);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * {@link complete} with the outcome already encoded (`encodeOutcome`'s bytes, or a view of
   * the reused encoding buffer, which this gives back). `undefined` when the outcome was
   * recorded before this returned (a store that answers at once), else the promise
   * `complete` gives.
   * @internal for the engine, which encodes JSON values in one step
   */
  completeEncoded(bytes: Uint8Array): Promise<void> | undefined {
    try {
      this.startFinishing();
    } catch (error) {
      giveBackReused(bytes);
      throw error;
    }
    return this.recordEncoded(bytes);
  }

  /** The write of encoded bytes once finishing started; gives back the reused buffer. */
  private recordEncoded(bytes: Uint8Array): Promise<void> | undefined {
    try {
      // The usual case: no codec to wait for, an outcome within the limit (else `record`).
      if (this.settings.codec === undefined && bytes.length <= this.settings.maxOutcomeBytes) {
        const writing = this.finalWrite(bytes);
        return writing?.catch((error: unknown) => this.notWritten(error));
      }
      return this.record(bytes);
    } finally {
      giveBackReused(bytes);
    }
  }

  /**
   * Whether this execution's outcome may be encoded into the reused buffer: the store's
   * synchronous `complete` copies what it keeps, and no codec sees the bytes first.
   * @internal for the engine
   */
  mayReuseEncoding(): boolean {
    return this.settings.codec === undefined && copiesInputOf(this.settings.store.complete);
  }

  /**
   * The encoding of `execute`'s value under the built-in JSON serializer: as a string of one
   * character a byte (for {@link completeLatin1}) when the store's `complete` takes one and
   * the JSON text is ASCII and within `maxOutcomeBytes`, else its bytes (for
   * {@link completeEncoded}). Throws what `JSON.stringify` throws.
   * @internal for the engine
   */
  encodeJson(value: unknown): Uint8Array | string {
    const text = JSON.stringify(value);
    const { codec, store, maxOutcomeBytes } = this.settings;
    // The store keeps the string and counts one byte a character: only a text that V8 holds
    // at one byte a character (see `stringifiesOneByte`); elsewhere the bytes way.
    if (
      stringifiesOneByte &&
      text !== undefined &&
      codec === undefined &&
      latin1OutcomeFormOf(store.complete)
    ) {
      const held = jsonValueLatin1(text);
      if (held !== undefined && held.length <= maxOutcomeBytes) return held;
    }
    return encodeJsonText(text, this.mayReuseEncoding());
  }

  /**
   * {@link completeEncoded} of an outcome encoded as a string of one character a byte
   * ({@link encodeJson}): given as it is to the store's Latin-1 outcome form (an in-process
   * store keeps the string: no bytes made, none copied). A store whose methods were replaced
   * since, or an attempt that did not land at once, takes the bytes and the usual way.
   * @internal for the engine
   */
  completeLatin1(held: string): Promise<void> | undefined {
    try {
      this.startFinishing();
    } catch (error) {
      return Promise.reject(error);
    }
    const form = latin1OutcomeFormOf(this.settings.store.complete);
    const written = (writing: Promise<void> | undefined) =>
      writing?.catch((error: unknown) => this.notWritten(error));
    if (form === undefined || this.settings.codec !== undefined)
      return written(this.finalWrite(latin1Bytes(held)));
    const { retentionMs, storeTimeoutMs } = this.settings;
    const startedAt = this.report ? performance.now() : 0;
    let result: OwnerWriteResult;
    try {
      const answer = callStoreSync(
        'complete',
        form,
        { key: this.storageKey, owner: this.owner, outcomeLatin1: held, retentionMs },
        this.report?.observer('complete'),
        storeTimeoutMs,
        true,
      );
      // As `finalWrite`: a form that answered a promise is the first attempt of the retried
      // write; one that failed for the store goes on with the retries (with the bytes).
      if (answer instanceof Promise) return written(this.retriedWrite(latin1Bytes(held), answer));
      result = answer;
    } catch (error) {
      if (!(error instanceof StoreUnavailableError))
        return written(Promise.reject(this.notLanded(error)));
      this.lastStoreError = error;
      this.report?.storeError('complete', error, this.report ? performance.now() - startedAt : 0);
      return written(this.retriedWrite(latin1Bytes(held)));
    }
    try {
      this.landed(result, held.length, startedAt);
    } catch (error) {
      return Promise.reject(error);
    }
    return undefined;
  }

  private async record(encoded: Uint8Array): Promise<void> {
    const limit = this.settings.maxOutcomeBytes;
    if (encoded.length > limit)
      return this.refused(new OutcomeTooLargeError(encoded.length, limit));
    let bytes: Uint8Array;
    try {
      // (Reused bytes never go to a codec: they are chosen only without one; copied if so.)
      bytes = this.settings.codec ? await this.seal(kept(encoded)) : encoded;
    } catch (cause) {
      return this.notSerializable(cause);
    }
    // Sealed bytes may be longer (a header, a tag) than the encoding.
    if (bytes.length > limit) return this.refused(new OutcomeTooLargeError(bytes.length, limit));
    try {
      await this.finalWrite(bytes);
    } catch (error) {
      return this.notWritten(error);
    }
  }

  /** The final write of the outcome failed: a marker when it did not fit; `error` rethrown. */
  private notWritten(error: unknown): Promise<never> {
    if (error instanceof OutcomeTooLargeError || error instanceof StoreFullError)
      return this.refused(error);
    throw error;
  }

  /** The operation ran; what it gave cannot be stored. A marker keeps retries from running it. */
  private async notSerializable(cause: unknown): Promise<never> {
    const marker = await this.writeMarker('not_serializable', {}).then(
      () => undefined,
      (failure: unknown) => ({ failure }),
    );
    const error = new OutcomeNotRecordedError('not_serializable', { cause });
    if (marker) noteMarkerFailure(error, marker.failure);
    throw error;
  }

  /** The bytes the store gets for `encoded`: sealed by the codec when there is one. */
  private async seal(encoded: Uint8Array): Promise<Uint8Array> {
    const { codec } = this.settings;
    if (!codec) return encoded;
    const context = { storageKey: this.storageKey, maxBytes: this.settings.maxOutcomeBytes };
    // Bounded like a store call: a codec that never answers must not hold the caller forever.
    const sealed = await codecCall('seal', this.settings.storeTimeoutMs, () =>
      codec.seal(encoded, context),
    );
    if (!(sealed instanceof Uint8Array))
      throw new InvalidInputError('outcomeCodec.seal must resolve to a Uint8Array');
    return sealed;
  }

  /**
   * Records a small final marker instead of an outcome that cannot be recorded (for an
   * integration that streamed a response and learned only at its end that it exceeded
   * `maxOutcomeBytes`). A replay then raises `OutcomeNotRecordedError` with `reason`, so a
   * retry never runs the operation again. Emits an `outcome_not_recorded` event. Retries
   * and rejects like {@link complete}; when not even the marker fits the store, the key is
   * abandoned (its lease runs out) and the store's error is thrown.
   */
  async completeNotRecorded(
    reason: NotRecordedReason,
    details: NotRecordedDetails = {},
  ): Promise<void> {
    // Checked before anything is written or the execution starts finishing: an unknown reason
    // would be sealed into a marker every reader takes for `too_large` (or, unsealed, crash).
    if (!isNotRecordedReason(reason))
      throw new InvalidInputError(
        `completeNotRecorded: unknown reason ${shownValue(reason)} (one of ${NOT_RECORDED_REASONS.join(', ')})`,
      );
    this.startFinishing();
    await this.writeMarker(reason, details);
  }

  /**
   * Gives the key up so that a retry executes again. Throws `LeaseLostError` when another
   * execution owns the key now (nothing was changed) and `StoreUnavailableError` when the
   * store failed (the record stays in progress until its lease passes).
   */
  async release(): Promise<void> {
    return this.releaseWithin(this.settings.storeTimeoutMs);
  }

  /** `release` with a time limit of `timeoutMs`. */
  private async releaseWithin(timeoutMs: number): Promise<void> {
    this.startFinishing();
    this.stop();
    const { store, retentionMs } = this.settings;
    const startedAt = this.report ? performance.now() : 0;
    let result: OwnerWriteResult;
    try {
      const input = { key: this.storageKey, owner: this.owner, retentionMs };
      const observe = this.report?.observer('release');
      const sync = syncFormOf(store.release);
      const answer = sync ? callStoreSync('release', sync, input, observe, timeoutMs) : undefined;
      result = sync
        ? answer instanceof Promise
          ? await answer
          : (answer as OwnerWriteResult)
        : await callStore('release', timeoutMs, (context) => store.release(input, context), {
            observe,
          });
    } catch (error) {
      this.report?.storeError('release', error, performance.now() - startedAt);
      this.report?.end('abandoned');
      throw error;
    }
    if (!result.ok) {
      this.report?.leaseLost('release');
      throw new LeaseLostError();
    }
    this.report?.released(startedAt);
  }

  private async refused(error: OutcomeTooLargeError | StoreFullError): Promise<never> {
    const details =
      error instanceof OutcomeTooLargeError ? { size: error.size, limit: error.limit } : {};
    const reason = error instanceof OutcomeTooLargeError ? 'too_large' : 'store_full';
    // Reported through events; the caller gets the error that kept the outcome out, noted
    // when the marker did not land either (no marker answers a retry: see markerFailureOf).
    await this.writeMarker(reason, details).catch((failure: unknown) =>
      noteMarkerFailure(error, failure),
    );
    throw error;
  }

  private async writeMarker(reason: NotRecordedReason, details: NotRecordedDetails) {
    this.report?.notRecorded(reason, details);
    let stored: Uint8Array;
    try {
      stored = await this.seal(encodeOutcome(notRecordedOutcome(reason, details)));
    } catch {
      // The codec cannot seal even the marker (a key service down): store it plain. It holds
      // no user data, only the reason, and the engine reads it before the codec, so the key
      // answers OUTCOME_NOT_RECORDED for its retention instead of running again after its lease.
      stored = plainNotRecorded(reason);
    }
    try {
      await this.finalWrite(stored);
    } catch (error) {
      // Not even the marker fits: never release (a retry would run again); let the lease lapse.
      if (error instanceof OutcomeTooLargeError || error instanceof StoreFullError) this.giveUp();
      throw error;
    }
  }

  /** Stops holding the key without releasing it: the lease runs out by itself. */
  private giveUp(): void {
    this.stop();
    this.report?.end('abandoned');
  }

  /**
   * The owner-checked complete of `bytes`, retried until it settles (tracked as background
   * work); the caller waits for it at most `completionWaitMs`. The caller's timer is armed
   * only when it can matter: at once when a single attempt may outlast `completionWaitMs`,
   * else when the first attempt fails (a write that lands at once costs no timer).
   * `undefined` when it landed before this returned (a store that answers at once).
   */
  private finalWrite(bytes: Uint8Array): Promise<void> | undefined {
    const complete = this.settings.store.complete;
    const sync = syncFormOf(complete);
    // Reused bytes go only to a synchronous form that copies them (the store's methods may
    // have been replaced since they were encoded); anything that outlives this call copies.
    if (isReusedBuffer(bytes) && !(sync && copiesInputOf(complete))) bytes = kept(bytes);
    if (sync) {
      // A store that answers at once: one direct attempt, nothing left to wait for or track
      // when it answers. One that failed for the store (not for the outcome) goes on with the
      // retries below, like a first attempt that failed.
      const startedAt = this.report ? performance.now() : 0;
      let result: OwnerWriteResult;
      try {
        const answer = callStoreSync(
          'complete',
          sync,
          this.completeInput(bytes),
          this.report?.observer('complete'),
          this.settings.storeTimeoutMs,
          true,
        );
        // A form that answered a promise after all: that attempt is the first of the retried
        // write, timed and tracked like the promise form's.
        if (answer instanceof Promise) return this.retriedWrite(kept(bytes), answer);
        result = answer;
      } catch (error) {
        if (!(error instanceof StoreUnavailableError)) return Promise.reject(this.notLanded(error));
        // Retried in the background: their own bytes, taken before any listener runs.
        bytes = kept(bytes);
        this.lastStoreError = error;
        this.report?.storeError('complete', error, this.report ? performance.now() - startedAt : 0);
        return this.retriedWrite(bytes);
      }
      try {
        this.landed(result, bytes.length, startedAt);
      } catch (error) {
        return Promise.reject(error);
      }
      return undefined;
    }
    return this.retriedWrite(bytes);
  }

  /** {@link finalWrite} through the store's promise, retried until it settles. */
  private retriedWrite(bytes: Uint8Array, first?: Promise<OwnerWriteResult>): Promise<void> {
    const { completionWaitMs, storeTimeoutMs } = this.settings;
    const startedAt = performance.now();
    return new Promise<void>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const armBudget = () => {
        if (timer !== undefined) return;
        const left = Math.max(0, startedAt + completionWaitMs - performance.now());
        timer = setTimeout(() => {
          reject(
            new StoreUnavailableError(
              `The outcome is not recorded yet: the store failed for ${completionWaitMs} ms; the executor keeps retrying in the background`,
              { cause: this.lastStoreError },
            ),
          );
        }, left);
      };
      if (!(completionWaitMs >= storeTimeoutMs)) armBudget();
      const landing = this.completeUntilSettled(bytes, startedAt, armBudget, first);
      this.tasks.track(landing);
      landing.then(
        () => {
          clearTimeout(timer);
          resolve();
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }

  private async completeUntilSettled(
    bytes: Uint8Array,
    startedAt: number,
    onFailure: () => void,
    first?: Promise<OwnerWriteResult>,
  ): Promise<void> {
    const { store, storeTimeoutMs, maxHoldMs } = this.settings;
    const input = this.completeInput(bytes);
    // A synchronous form that answered a promise is not called synchronously again.
    const sync = first ? undefined : syncFormOf(store.complete);
    let pending = first;
    let result: OwnerWriteResult;
    try {
      result = await retryStoreCall(
        {
          operation: 'complete',
          timeoutMs: storeTimeoutMs,
          // `maxHoldMs` in elapsed time from the acquire's send, as the lease keeper counts it
          // (a wall clock stepped back must not prolong the retries: the leaserev2 review).
          clock: elapsedClock(this.settings.clock),
          deadline: this.acquiredAt + maxHoldMs,
          // Retried well inside the lease: a 3 s lease gets a try at least every 300 ms.
          maxDelayMs: this.settings.leaseMs / 10,
          observe: this.report?.observer('complete'),
          onError: (error, durationMs) => {
            this.lastStoreError = error;
            this.report?.storeError('complete', error, durationMs);
            onFailure();
          },
        },
        (context) => {
          const call = pending ?? store.complete(input, context);
          pending = undefined;
          return call;
        },
        sync && (() => sync(input)),
      );
    } catch (error) {
      throw this.notLanded(error);
    }
    this.landed(result, bytes.length, startedAt);
  }

  private completeInput(bytes: Uint8Array): CompleteInput {
    const { retentionMs } = this.settings;
    return { key: this.storageKey, owner: this.owner, outcome: bytes, retentionMs };
  }

  /** The final write failed for good: `error`, to be thrown (the lease kept for a marker when the outcome did not fit). */
  private notLanded(error: unknown): unknown {
    // Too large / full: the caller writes a marker next, so the lease is kept for it.
    if (error instanceof OutcomeTooLargeError || error instanceof StoreFullError) return error;
    this.stop();
    this.report?.completionAbandoned(
      error instanceof StoreUnavailableError ? 'max_hold' : 'error',
      error,
    );
    return error;
  }

  /** The final write was answered: done, or LeaseLostError when another execution took the key. */
  private landed(result: OwnerWriteResult, outcomeBytes: number, startedAt: number): void {
    this.stop();
    if (!result.ok) {
      this.report?.leaseLost('complete');
      throw new LeaseLostError(
        'The outcome was not recorded: another execution took this key over after the lease passed',
      );
    }
    this.report?.completed(outcomeBytes, startedAt);
  }

  private startFinishing(): void {
    if (this.lease.phase !== 'running')
      throw new InvalidInputError('This execution was already completed or released');
    this.lease.phase = 'finishing';
  }

  private stop(): void {
    this.lease.stop();
  }
}

/** `bytes`, or a copy of them when they are a view of the reused encoding buffer. */
function kept(bytes: Uint8Array): Uint8Array {
  return isReusedBuffer(bytes) ? new Uint8Array(bytes) : bytes;
}
