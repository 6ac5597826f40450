import { randomUUID } from 'node:crypto';
import { BackgroundTasks } from './background.js';
import {
  IdemError,
  InProgressError,
  InvalidInputError,
  MismatchError,
  OutcomeNotRecordedError,
  ReplayedFailureError,
  StoreUnavailableError,
} from './errors.js';
import { Execution } from './execution.js';
import { GiveBacks } from './give-back.js';
import { deriveStorageKey, type Scope } from './keys.js';
import { readNotRecorded } from './not-recorded.js';
import { decodeOutcome, decodeOutcomeView, type StoredOutcome } from './outcome-codec.js';
import {
  encodeJsonValue,
  JSON_VALUE_META,
  jsonSerializer,
  type OutcomeSerializer,
} from './serializer.js';
import {
  type IdempotencyOptions,
  type OutcomePolicy,
  type ResolvedSettings,
  resolveSettings,
  type Settled,
  successOnly,
} from './settings.js';
import type { AcquireResult } from './store.js';
import { callStore } from './store-call.js';

/** Identifies one logical request. */
export interface IdempotentRequest {
  /** The client's idempotency key (1..255 printable ASCII). */
  key: string;
  /** What the key is unique within (tenant, principal, operation). @default null */
  scope?: Scope;
  /** Fingerprint of the request (see `fingerprint()`); a retry with another one gets `MISMATCH`. @default '' */
  fingerprint?: string;
}

/** What the operation receives. */
export interface OperationContext {
  /** Fencing token; pass it to downstream writes that can reject a lower one. */
  fence: number;
  /** Aborts when the lease is lost. */
  signal: AbortSignal;
  /** The derived storage key (stable for a scope and key). */
  storageKey: string;
}

/** Result of `begin`: either the stored outcome to replay, or an execution to run. */
export type BeginResult =
  | {
      kind: 'replay';
      outcome: StoredOutcome;
      storageKey: string;
      /** Fence of the execution whose outcome this is (its stream generation). */
      fence: number;
    }
  | { kind: 'acquired'; execution: Execution };

/** Result of `execute`. */
export interface ExecuteResult<T> {
  value: T;
  /** True when the value is a replay of a recorded outcome. */
  replayed: boolean;
}

/** The replay state machine bound to a store and options. */
export interface Idempotency<T = unknown> {
  /**
   * Runs `operation` at most once per live lease for the request's key and records its
   * final outcome; replays that outcome to every later call with the same key and
   * fingerprint.
   *
   * @throws InvalidKeyError, MismatchError, InProgressError, LeaseLostError,
   *   StoreUnavailableError, OutcomeTooLargeError, OutcomeNotRecordedError, StoreFullError,
   *   ReplayedFailureError, or the operation's own error when it was not final.
   */
  execute(
    request: IdempotentRequest,
    operation: (ctx: OperationContext) => Promise<T>,
  ): Promise<ExecuteResult<T>>;
  /**
   * The lower-level step: acquire (or wait, or replay). For callers that must start
   * answering before the operation ends (streamed HTTP responses): run, then call
   * `execution.complete(outcome)` or `execution.release()`.
   *
   * @throws OutcomeNotRecordedError when the key holds a not-recorded marker (the
   *   operation ran once, its outcome could not be recorded).
   */
  begin(request: IdempotentRequest, options?: BeginOptions): Promise<BeginResult>;
  /**
   * Waits until no final write is being retried in the background (for a server's
   * shutdown), or `timeoutMs` passed. Resolves with how many are still pending.
   * @param timeoutMs longest wait; MUST be a finite, non-negative number of ms (else the
   *   promise rejects with `InvalidInputError`) @default leaseMs
   */
  drain(timeoutMs?: number): Promise<number>;
  /** The options in force, defaults filled in. */
  readonly settings: ResolvedSettings;
}

/** Options of one `begin` call. */
export interface BeginOptions {
  /** Stops a bounded wait at once (the client went away); `begin` then rejects with the signal's reason. */
  signal?: AbortSignal;
}

// Node batches the entropy behind randomUUID: the cheapest 122 random bits per acquire.
const newOwner = (): string => randomUUID();

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Creates the replay state machine over a store. */
export function createIdempotency<T = unknown>(options: IdempotencyOptions<T>): Idempotency<T> {
  const settings = resolveSettings(options);
  const isFinal = (options.isFinal ?? successOnly) as OutcomePolicy<T>;
  const serializer = (options.serializer ?? jsonSerializer) as OutcomeSerializer<T>;
  const tasks = new BackgroundTasks();
  const giveBacks = new GiveBacks(settings, tasks);

  // The built-in JSON serializer: `execute` encodes a value in one step, and hands a replayed
  // body to it as a view of the store's bytes (it turns them into text at once).
  const viewReplays = serializer === jsonSerializer;

  /** `begin`; with `viewBody`, a replayed outcome's body is a view into the record's bytes. */
  async function begin(
    request: IdempotentRequest,
    beginOptions: BeginOptions = {},
    viewBody = false,
  ): Promise<BeginResult> {
    const { signal } = beginOptions;
    const storageKey = deriveStorageKey(request.scope ?? null, request.key);
    const fingerprint = request.fingerprint ?? '';
    const { store, wait, emit } = settings;
    const waitUntil = wait ? performance.now() + wait.timeoutMs : 0;
    let poll = wait ? (wait.pollMs ?? 50) : 0;
    for (;;) {
      signal?.throwIfAborted();
      const owner = newOwner();
      const callStartedAt = settings.clock.now();
      let result: AcquireResult;
      let call: Promise<AcquireResult> | undefined;
      try {
        result = await callStore('acquire', settings.storeTimeoutMs, () => {
          call = store.acquire({
            key: storageKey,
            fingerprint,
            owner,
            leaseMs: settings.leaseMs,
            retentionMs: settings.retentionMs,
          });
          return call;
        });
      } catch (error) {
        emit({ type: 'store_error', storageKey, operation: 'acquire', error });
        // An acquire that may have been applied is given back; one refused before it was
        // sent (an admission limit) holds nothing.
        if (error instanceof StoreUnavailableError && !error.unsent)
          giveBacks.releaseIfApplied(storageKey, owner, callStartedAt, call);
        throw error;
      }
      if (result.kind === 'acquired') {
        emit({ type: 'miss', storageKey, fence: result.fence, takeover: result.takeover });
        const execution = new Execution(settings, storageKey, owner, {
          fence: result.fence,
          takeover: result.takeover,
          callStartedAt,
          tasks,
        });
        return { kind: 'acquired', execution };
      }
      const { record, now } = result;
      if (record.fingerprint !== fingerprint) {
        emit({ type: 'mismatch', storageKey });
        throw new MismatchError();
      }
      if (record.status === 'completed') {
        if (!record.outcome)
          throw new StoreUnavailableError('Store returned a completed record without an outcome');
        emit({ type: 'hit', storageKey });
        const outcome = viewBody
          ? decodeOutcomeView(record.outcome, JSON_VALUE_META)
          : decodeOutcome(record.outcome);
        const marker = readNotRecorded(outcome);
        if (marker) throw new OutcomeNotRecordedError(marker.reason, marker);
        return { kind: 'replay', outcome, storageKey, fence: record.fence };
      }
      if (record.status !== 'in_progress') {
        throw new StoreUnavailableError(`Store returned a ${record.status} record as live`);
      }
      const retryAfterMs = Math.max(1, record.leaseUntil - now);
      emit({ type: 'conflict', storageKey, retryAfterMs });
      const remaining = waitUntil - performance.now();
      if (!wait || remaining <= 0)
        throw new InProgressError(retryAfterMs, { fence: record.fence, storageKey });
      await sleep(Math.min(poll, remaining, retryAfterMs + 1), signal);
      poll = Math.min(poll * 1.5, 1_000);
    }
  }

  async function execute(
    request: IdempotentRequest,
    operation: (ctx: OperationContext) => Promise<T>,
  ): Promise<ExecuteResult<T>> {
    const begun = await begin(request, {}, viewReplays);
    if (begun.kind === 'replay') return { value: replay(begun.outcome), replayed: true };
    const execution = begun.execution;
    let settled: Settled<T>;
    try {
      const value = await operation({
        fence: execution.fence,
        // Read on demand: most operations never look at it, and an AbortController is not free.
        get signal() {
          return execution.signal;
        },
        storageKey: execution.storageKey,
      });
      settled = { ok: true, value };
    } catch (error) {
      settled = { ok: false, error };
    }
    let final: boolean;
    try {
      final = isFinal(settled);
    } catch (policyError) {
      // After a success the key is never handed to a retry for a reason of ours: the lease
      // runs out instead. After a failure nothing ran to completion: release as usual.
      if (settled.ok) execution.abandon();
      else await execution.release().catch(() => {});
      throw policyError;
    }
    if (!final) {
      // A failed release leaves the record in progress until its lease passes: reported
      // through events, while the caller gets what the operation did.
      await execution.release().catch(() => {});
      throw (settled as { ok: false; error: unknown }).error;
    }
    let outcome: StoredOutcome | Uint8Array;
    try {
      if (!settled.ok) outcome = failureOutcome(settled.error);
      else if (viewReplays) outcome = encodeJsonValue(settled.value);
      else outcome = wrapValue(serializer.serialize(settled.value));
    } catch (cause) {
      // The operation ran; its value cannot be stored. A marker keeps retries from running it again.
      await execution.completeNotRecorded('not_serializable').catch(() => {});
      throw new OutcomeNotRecordedError('not_serializable', { cause });
    }
    await (outcome instanceof Uint8Array
      ? execution.completeEncoded(outcome)
      : execution.complete(outcome));
    if (settled.ok) return { value: settled.value, replayed: false };
    throw settled.error;
  }

  function replay(outcome: StoredOutcome): T {
    if (outcome.meta.kind === 'failure') {
      const failure = outcome.meta.failure as { name: string; message: string; code?: string };
      throw new ReplayedFailureError(failure);
    }
    return serializer.deserialize({
      meta: (outcome.meta.value ?? {}) as StoredOutcome['meta'],
      body: outcome.body,
    });
  }

  return {
    execute,
    begin: (request, beginOptions) => begin(request, beginOptions),
    drain: async (timeoutMs = settings.leaseMs) => {
      if (!(typeof timeoutMs === 'number' && Number.isFinite(timeoutMs) && timeoutMs >= 0))
        throw new InvalidInputError('drain(timeoutMs) needs a finite, non-negative number of ms');
      return tasks.drain(timeoutMs);
    },
    settings,
  };
}

function wrapValue(outcome: StoredOutcome): StoredOutcome {
  return { meta: { kind: 'value', value: outcome.meta }, body: outcome.body };
}

function failureOutcome(error: unknown): StoredOutcome {
  const failure: { name: string; message: string; code?: string } =
    error instanceof Error
      ? { name: error.name, message: error.message }
      : { name: 'Error', message: String(error) };
  if (
    error instanceof IdemError ||
    (error instanceof Error && typeof (error as { code?: unknown }).code === 'string')
  ) {
    failure.code = (error as unknown as { code: string }).code;
  }
  return { meta: { kind: 'failure', failure }, body: new Uint8Array() };
}
