import { BackgroundTasks } from './background.js';
import {
  InProgressError,
  InvalidInputError,
  MismatchError,
  OutcomeNotRecordedError,
  ReplayedFailureError,
  StoreUnavailableError,
} from './errors.js';
import { Execution } from './execution.js';
import { GiveBacks } from './give-back.js';
import type {
  BeginOptions,
  BeginResult,
  ExecuteResult,
  Idempotency,
  IdempotentRequest,
  OperationContext,
} from './idempotency-types.js';
import { deriveStorageKey } from './keys.js';
import { readNotRecorded } from './not-recorded.js';
import { since, storeCallObserver } from './observe.js';
import type { StoredOutcome } from './outcome-codec.js';
import { failureOutcome, wrapValue } from './recorded-outcomes.js';
import {
  encodeJsonValue,
  JSON_VALUE_META,
  jsonSerializer,
  type OutcomeSerializer,
} from './serializer.js';
import {
  type IdempotencyOptions,
  type OutcomePolicy,
  resolveSettings,
  type Settled,
  successOnly,
} from './settings.js';
import type { AcquireInput, AcquireResult } from './store.js';
import { callStore, callStoreSync, syncFormOf, viewFormOf } from './store-call.js';
import { openStoredOutcome } from './stored-outcome.js';

// An owner token only has to differ from every other acquisition's, in this process and in
// every other one writing to the same store: 128 random bits drawn once per process (per copy
// of this module), then a counter. Drawn on first use, not at import (workerd refuses randomness at global scope).
// Cheaper than a `randomUUID()` per acquire, and shorter (22 + a few characters against 36).
let ownerPrefix: string | undefined;
let ownerCount = 0;
function newOwner(): string {
  if (ownerPrefix === undefined) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    let text = '';
    for (const byte of bytes) text += String.fromCharCode(byte);
    // base64url without padding: 22 characters for 16 bytes.
    ownerPrefix = `${btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')}.`;
  }
  return ownerPrefix + (ownerCount++).toString(36);
}

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

/** `execute`'s replay, decoded inside `begin`. */
interface Replayed<T> {
  kind: 'replayed';
  value: T;
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
  // A store's view form (outcome bytes valid until its next call) is taken only where no
  // code of the caller's can run between the call and the decoding: no event listener (one
  // is called with the call's timing, and could call the store), checked again per call
  // for the codec. Every replay decodes (or, for `begin`, copies) the body at once.
  const viewable = !settings.observed;

  /**
   * `begin`; with `forExecute` (`execute`'s own call), a replay comes back as its value,
   * decoded at once (under the built-in JSON serializer from a view of the record's bytes).
   */
  async function begin(
    request: IdempotentRequest,
    beginOptions: BeginOptions = {},
    forExecute = false,
  ): Promise<BeginResult | Replayed<T>> {
    const { signal } = beginOptions;
    const storageKey = deriveStorageKey(request.scope ?? null, request.key);
    const fingerprint = request.fingerprint ?? '';
    const { store, wait, emit, observed } = settings;
    const operation = request.operation;
    const waitUntil = wait ? performance.now() + wait.timeoutMs : 0;
    let poll = wait ? (wait.pollMs ?? 50) : 0;
    for (;;) {
      signal?.throwIfAborted();
      const owner = newOwner();
      const callStartedAt = settings.clock.now();
      const timedFrom = observed ? performance.now() : 0;
      let result: AcquireResult;
      let call: Promise<AcquireResult> | undefined;
      const input: AcquireInput = {
        key: storageKey,
        fingerprint,
        owner,
        leaseMs: settings.leaseMs,
        retentionMs: settings.retentionMs,
      };
      const observe = storeCallObserver(settings, 'acquire', storageKey, operation);
      // The view form's outcome bytes are the store's until its next call: taken only when
      // nothing can run before they are decoded (no listener, no codec) and copied then.
      const sync =
        (viewable && !settings.codec && viewFormOf(store.acquire)) || syncFormOf(store.acquire);
      try {
        // A store that answers at once (in process) is called directly: no promise, no timer.
        if (sync) {
          const answer = callStoreSync('acquire', sync, input, observe, settings.storeTimeoutMs);
          // A form that answered a promise after all: awaited under the time limit (above).
          if (answer instanceof Promise) {
            call = answer;
            result = await answer;
          } else result = answer;
        } else {
          result = await callStore(
            'acquire',
            settings.storeTimeoutMs,
            () => {
              call = store.acquire(input);
              return call;
            },
            { observe },
          );
        }
      } catch (error) {
        if (observed)
          emit({
            type: 'store_error',
            storageKey,
            operation,
            method: 'acquire',
            fence: undefined,
            error,
            durationMs: since(timedFrom),
          });
        // An acquire that may have been applied is given back; one refused before it was
        // sent (an admission limit) holds nothing.
        if (error instanceof StoreUnavailableError && !error.unsent)
          giveBacks.releaseIfApplied(storageKey, operation, owner, callStartedAt, call);
        throw error;
      }
      const durationMs = observed ? since(timedFrom) : 0;
      if (result.kind === 'acquired') {
        const { fence, takeover } = result;
        if (observed) emit({ type: 'miss', storageKey, operation, fence, takeover, durationMs });
        const execution = new Execution(settings, storageKey, owner, {
          fence,
          takeover,
          callStartedAt,
          tasks,
          operation,
        });
        return { kind: 'acquired', execution };
      }
      const { record, now } = result;
      if (record.fingerprint !== fingerprint) {
        if (observed) emit({ type: 'mismatch', storageKey, operation, durationMs });
        throw new MismatchError();
      }
      if (record.status === 'completed') {
        if (!record.outcome)
          throw new StoreUnavailableError('Store returned a completed record without an outcome');
        let outcome: StoredOutcome;
        try {
          // A plain not-recorded marker (written when the codec could not seal one) is read
          // without the codec. Whatever else fails to open or decode is OUTCOME_CORRUPT,
          // never a replay. Without a view, the body is a copy.
          const opened = openStoredOutcome(
            settings,
            storageKey,
            record.outcome,
            forExecute && viewReplays ? JSON_VALUE_META : undefined,
          );
          outcome = opened instanceof Promise ? await opened : opened;
        } catch (error) {
          if (observed) {
            const { fence } = record;
            emit({ type: 'outcome_corrupt', storageKey, operation, fence, error, durationMs });
          }
          throw error;
        }
        const decodeMs = observed ? since(timedFrom) - durationMs : 0;
        const marker = readNotRecorded(outcome);
        // `execute` gets the value, decoded before any listener runs: a view of the record's
        // bytes is read before anything else can touch them.
        let value: T | undefined;
        let failed: { error: unknown } | undefined;
        if (forExecute && !marker) {
          try {
            value = replay(outcome);
          } catch (error) {
            failed = { error };
          }
        }
        const { fence } = record;
        if (observed) {
          const outcomeBytes = record.outcome.length;
          emit({ type: 'hit', storageKey, operation, fence, outcomeBytes, durationMs, decodeMs });
        }
        if (marker) throw new OutcomeNotRecordedError(marker.reason, marker);
        if (failed) throw failed.error;
        if (forExecute) return { kind: 'replayed', value: value as T };
        return { kind: 'replay', outcome, storageKey, fence };
      }
      if (record.status !== 'in_progress') {
        throw new StoreUnavailableError(`Store returned a ${record.status} record as live`);
      }
      const retryAfterMs = Math.max(1, record.leaseUntil - now);
      if (observed)
        emit({
          type: 'conflict',
          storageKey,
          operation,
          fence: record.fence,
          retryAfterMs,
          durationMs,
        });
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
    const begun = await begin(request, {}, true);
    if (begun.kind === 'replayed') return { value: begun.value, replayed: true };
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
      else if (viewReplays) outcome = encodeJsonValue(settled.value, execution.mayReuseEncoding());
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
    begin: (request, beginOptions) => begin(request, beginOptions) as Promise<BeginResult>,
    drain: async (timeoutMs = settings.leaseMs) => {
      if (!(typeof timeoutMs === 'number' && Number.isFinite(timeoutMs) && timeoutMs >= 0))
        throw new InvalidInputError('drain(timeoutMs) needs a finite, non-negative number of ms');
      return tasks.drain(timeoutMs);
    },
    settings,
  };
}
