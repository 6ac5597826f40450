import { settleWithin } from './adapter-kit/store-errors.js';
import type { BackgroundTasks } from './background.js';
import { elapsedClock, monotonicClock } from './clock.js';
import {
  InProgressError,
  InvalidInputError,
  LeaseLostError,
  MismatchError,
  OutcomeNotRecordedError,
  StoreUnavailableError,
} from './errors.js';
import { Execution } from './execution.js';
import type { FixedDelayTimers } from './fixed-delay-timers.js';
import type { GiveBacks } from './give-back.js';
import type { BeginOptions, BeginResult, IdempotentRequest } from './idempotency-types.js';
import { deriveStorageKey } from './keys.js';
import { leaseRunway } from './lease-keeper.js';
import { readNotRecorded } from './not-recorded.js';
import { since, storeCallObserver } from './observe.js';
import type { StoredOutcome } from './outcome-codec.js';
import { JSON_VALUE_META, jsonValueText, jsonValueTextOfLatin1 } from './serializer.js';
import type { ResolvedSettings } from './settings.js';
import type { AcquireInput, AcquireResult, StoreCallContext, StoredRecord } from './store.js';
import {
  callStore,
  callStoreSync,
  cutStoreCall,
  type Latin1Record,
  latin1FormOf,
  pendingOf,
  syncFormOf,
  viewFormOf,
} from './store-call.js';
import { openStoredOutcome } from './stored-outcome.js';
import { latin1Bytes } from './utf8.js';

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

/**
 * Whether `value` is an `AbortSignal` (of any realm, or a polyfill with its methods): what
 * `begin` reads of one (`aborted`, `reason`, `throwIfAborted`, its `abort` event).
 */
function isAbortSignal(value: unknown): value is AbortSignal {
  if (value instanceof AbortSignal) return true;
  if (typeof value !== 'object' || value === null) return false;
  const signal = value as Partial<AbortSignal>;
  return (
    typeof signal.aborted === 'boolean' &&
    typeof signal.throwIfAborted === 'function' &&
    typeof signal.addEventListener === 'function' &&
    typeof signal.removeEventListener === 'function'
  );
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
export interface Replayed<T> {
  kind: 'replayed';
  value: T;
}

/** What `begin` gives: an acquisition, a replay, or (for `execute`) a replayed value. */
export type Begun<T> = BeginResult | Replayed<T>;

/** A conflict `begin` waits out: another acquire after `delayMs`. */
interface Wait {
  kind: 'wait';
  delayMs: number;
}

/**
 * One `begin` call, across its attempts; also the current acquire's {@link Call} (one object
 * a call: an acquire runs only once the one before it settled, and what reads the call reads
 * it before that).
 */
interface Attempt extends Call {
  readonly storageKey: string;
  readonly fingerprint: string;
  readonly operation: string | undefined;
  readonly signal: AbortSignal | undefined;
  /** `execute`'s own call: a replay comes back as its value. */
  readonly forExecute: boolean;
  /** Until when a conflict is waited out (`performance.now()`; 0 without `wait`). */
  readonly waitUntil: number;
  /** The next poll interval while waiting. */
  poll: number;
}

/** One acquire's call: who asked and when (for events and the give-back of a failed one). */
interface Call {
  owner: string;
  /** When the acquire was sent, on the engine's clock for durations (`elapsedClock`). */
  callStartedAt: number;
  /** The same on {@link monotonicClock}, with an injected clock (0 with the default one). */
  callStartedAtMono: number;
  timedFrom: number;
}

/** What the engine's `begin` works with besides its settings. */
export interface BeginContext<T> {
  settings: ResolvedSettings;
  tasks: BackgroundTasks;
  giveBacks: GiveBacks;
  heartbeats: FixedDelayTimers | undefined;
  /** Replayed bodies are read from a view of the record's bytes (the built-in JSON serializer). */
  viewReplays: boolean;
  /** The value of a recorded outcome (throws a recorded failure). */
  replay(outcome: StoredOutcome): T;
}

/**
 * The engine's `begin`: acquire (or replay, or wait). A store that answers at once (built
 * with `answersSynchronously`) is answered without a promise: the result, a replay or the
 * error comes back (or is thrown) before the call returns; a store call that does not answer
 * at once, a codec, or a conflict waited out gives a promise. With `forExecute` (`execute`'s
 * own call), a replay comes back as its value, decoded at once (under the built-in JSON
 * serializer from a view of the record's bytes).
 */
export function createBegin<T>(
  context: BeginContext<T>,
): (
  request: IdempotentRequest,
  beginOptions?: BeginOptions,
  forExecute?: boolean,
) => Begun<T> | Promise<Begun<T>> {
  const { settings, giveBacks, viewReplays } = context;
  // Durations (the lease from the acquire's send, its round trip) are counted on a monotonic
  // clock with the default clock: a wall clock stepped while the acquire is in flight must not
  // move the lease estimate (the leaserev2 review). An injected clock is used as given (the
  // send is read on the monotonic clock as well: see LeaseKeeper).
  const elapsed = elapsedClock(settings.clock);
  // A store's view form (outcome bytes valid until its next call) is taken only where no
  // code of the caller's can run between the call and the decoding: no event listener (one
  // is called with the call's timing, and could call the store), checked again per call
  // for the codec. Every replay decodes (or, for `begin`, copies) the body at once.
  const viewable = !settings.observed;
  // An acquisition holds the key for `leaseMs` counted from its send. One that has not been
  // answered when less than a short runway of that lease is left (a tenth of it, at most
  // 1 s) is never used: a caller may take the key over once the lease passes, and the
  // operation would start beside it (a store slower than the lease, an event loop held up).
  // Waiting for it is bounded by that point too, when it comes before `storeTimeoutMs`.
  const { leaseMs, storeTimeoutMs } = settings;
  // (Never past the lease estimate, which allows for a store's whole-ms clock: `leaseRunway`.)
  const leaseBound = leaseRunway(leaseMs);
  const boundByLease = leaseBound < storeTimeoutMs;

  function begin(
    request: IdempotentRequest,
    beginOptions: BeginOptions | undefined,
    forExecute = false,
  ): Begun<T> | Promise<Begun<T>> {
    const { wait } = settings;
    if (typeof request !== 'object' || request === null)
      throw new InvalidInputError('The request must be an object ({ key, scope?, fingerprint? })');
    // `null` means the default, as for every option of the library (memory8-attack).
    if (beginOptions != null && typeof beginOptions !== 'object')
      throw new InvalidInputError('begin(request, options): options must be an object');
    const signal = beginOptions?.signal ?? undefined;
    if (signal !== undefined && !isAbortSignal(signal))
      throw new InvalidInputError('begin(request, { signal }): signal must be an AbortSignal');
    const fingerprint = request.fingerprint ?? '';
    // Compared as it is with the record's (a store may keep it as text): a number would be
    // stored as "5" by one store and never match again, every retry a MISMATCH (mutcore).
    if (typeof fingerprint !== 'string')
      throw new InvalidInputError('request.fingerprint must be a string (see fingerprint())');
    const attempt: Attempt = {
      storageKey: deriveStorageKey(request.scope ?? null, request.key),
      fingerprint,
      operation: request.operation,
      signal,
      forExecute,
      waitUntil: wait ? performance.now() + wait.timeoutMs : 0,
      poll: wait ? (wait.pollMs ?? 50) : 0,
      owner: '',
      callStartedAt: 0,
      callStartedAtMono: 0,
      timedFrom: 0,
    };
    const step = acquire(attempt);
    return step instanceof Promise || step.kind === 'wait' ? goOn(attempt, step) : step;
  }

  /** `begin` past a first answer that was not final: awaits it, waits out conflicts. */
  async function goOn(attempt: Attempt, first: Begun<T> | Wait | Promise<Begun<T> | Wait>) {
    let step = first;
    for (;;) {
      const answer = step instanceof Promise ? await step : step;
      if (answer.kind !== 'wait') return answer;
      await sleep(answer.delayMs, attempt.signal);
      attempt.poll = Math.min(attempt.poll * 1.5, 1_000);
      step = acquire(attempt);
    }
  }

  /** One acquire and what it found. */
  function acquire(attempt: Attempt): Begun<T> | Wait | Promise<Begun<T> | Wait> {
    attempt.signal?.throwIfAborted();
    const { store } = settings;
    const { storageKey } = attempt;
    const call: Call = attempt;
    call.owner = newOwner();
    call.callStartedAt = elapsed.now();
    // With an injected clock the lease is counted on elapsed time too (see LeaseKeeper).
    if (elapsed !== monotonicClock) call.callStartedAtMono = monotonicClock.now();
    call.timedFrom = settings.observed ? performance.now() : 0;
    const input: AcquireInput = {
      key: storageKey,
      fingerprint: attempt.fingerprint,
      owner: call.owner,
      leaseMs: settings.leaseMs,
      retentionMs: settings.retentionMs,
    };
    const observe = storeCallObserver(settings, 'acquire', storageKey, attempt.operation);
    // The view form's outcome bytes are the store's until its next call: taken only when
    // nothing can run before they are decoded (no listener, no codec) and copied then.
    // `execute` under the built-in JSON serializer parses a replayed value straight from the
    // store's Latin-1 string where it has that form (nothing copied or decoded first).
    const sync =
      (viewable &&
        !settings.codec &&
        ((attempt.forExecute && viewReplays && latin1FormOf(store.acquire)) ||
          viewFormOf(store.acquire))) ||
      syncFormOf(store.acquire);
    let sent: Promise<AcquireResult> | undefined;
    let sentWith: StoreCallContext | undefined;
    let answer: AcquireResult | Promise<AcquireResult>;
    try {
      // A store that answers at once (in process) is called directly: no promise, no timer.
      // A form that answered a promise after all is awaited under the time limit.
      answer = sync
        ? callStoreSync('acquire', sync, input, observe, storeTimeoutMs, boundByLease)
        : callStore(
            'acquire',
            storeTimeoutMs,
            (context) => {
              sentWith = context;
              sent = store.acquire(input, context);
              return sent;
            },
            // Bound by the lease, the wait ends before `storeTimeoutMs`: its timer must not
            // keep the process alive after a refusal (the lease bound's own timer does until then).
            boundByLease ? { observe, unref: true } : { observe },
          );
    } catch (error) {
      throw failed(attempt, call, error, undefined);
    }
    if (!(answer instanceof Promise)) return found(attempt, call, answer);
    const timed = answer;
    // The lease passes before `storeTimeoutMs` (a lease that short, or a time limit that
    // long): not waited for past the runway (see `leaseBound`).
    const pending = boundByLease
      ? settleWithin(timed, leaseBound, {
          onTimeout: () => {
            // Nobody waits for the call any more: its signal aborts now, not at
            // `storeTimeoutMs` (a store may cut the request, see StoreCallContext).
            if (sentWith)
              cutStoreCall(
                sentWith,
                new StoreUnavailableError(
                  `Store acquire not answered within ${Math.round(leaseBound)} ms, the runway of its lease`,
                ),
              );
            return notAnsweredInLease();
          },
        })
      : timed;
    return pending.then(
      (result) => found(attempt, call, result),
      (error: unknown) => {
        throw failed(attempt, call, error, sent ?? (sync ? pendingOf(timed) : undefined));
      },
    );
  }

  /** The error of an acquisition whose operation would start `ms` after its send, past the runway. */
  function lateToStart(ms: number): LeaseLostError {
    return new LeaseLostError(
      `The operation would start ${Math.round(ms)} ms after the acquisition was sent, too close to the end of its ${leaseMs} ms lease (or past it): another caller may take the key over once it passes, so the operation did not run (the acquisition is given back)`,
    );
  }

  /** The error of an acquire not answered before the runway of its lease (see `leaseBound`). */
  function notAnsweredInLease(): LeaseLostError {
    return new LeaseLostError(
      `The store did not answer the acquisition within ${Math.round(leaseBound)} ms of its send, too close to the end of its ${leaseMs} ms lease: another caller may take the key over once it passes, so the operation did not run (an acquisition that landed is given back)`,
    );
  }

  /**
   * A failed acquire: reported, and given back if it may have been applied; the error to
   * throw. A store error that comes once the runway of the lease was reached (an event loop
   * held up past it) is a `LeaseLostError` too, never a `StoreUnavailableError`: the
   * acquire may have landed, and a caller may take the key over from it once its lease
   * passes, so nothing may run on the strength of it, not even fail-open (an integration's
   * `failOpen` runs the operation unprotected on `STORE_UNAVAILABLE` only).
   */
  function failed(
    attempt: Attempt,
    call: Call,
    failure: unknown,
    sent: Promise<AcquireResult> | undefined,
  ): unknown {
    const { storageKey, operation } = attempt;
    let error = failure;
    if (
      error instanceof StoreUnavailableError &&
      !error.unsent &&
      elapsed.now() - call.callStartedAt >= leaseBound
    ) {
      error = notAnsweredInLease();
      (error as Error).cause = failure;
    }
    if (settings.observed)
      settings.emit({
        type: 'store_error',
        storageKey,
        operation,
        method: 'acquire',
        fence: undefined,
        error,
        durationMs: since(call.timedFrom),
      });
    // An acquire that may have been applied is given back; one refused before it was
    // sent (an admission limit) holds nothing. (Owner-checked: never anyone else's hold.)
    if (
      (error instanceof StoreUnavailableError && !error.unsent) ||
      error instanceof LeaseLostError
    )
      giveBacks.releaseIfApplied(
        storageKey,
        operation,
        call.owner,
        call.callStartedAt,
        sent,
        elapsed === monotonicClock ? undefined : call.callStartedAtMono,
      );
    return error;
  }

  /** What an acquire answered: the acquisition, a replay, a conflict to wait out, or an error. */
  function found(
    attempt: Attempt,
    call: Call,
    result: AcquireResult,
  ): Begun<T> | Wait | Promise<Begun<T>> {
    const { storageKey, operation } = attempt;
    const { observed, emit } = settings;
    const durationMs = observed ? since(call.timedFrom) : 0;
    if (result.kind === 'acquired') {
      const { fence, takeover, origin } = result;
      // The lease counts from the send: an answer that comes with less than the runway of it
      // left (the time limit above fired late, an event loop held up, a store that answered
      // at once but slowly: a pause of the process within the call) is refused and given
      // back, as an acquire not answered in time. (One clock reading: the heartbeats'
      // schedule needs it too.)
      const roundTrip = elapsed.now() - call.callStartedAt;
      if (roundTrip >= leaseBound) {
        const late = new LeaseLostError(
          `The store answered the acquisition ${Math.round(roundTrip)} ms after its send, too close to the end of its ${leaseMs} ms lease (or past it): another caller may take the key over once it passes, so the operation did not run (the acquisition is given back)`,
        );
        throw failed(attempt, call, late, undefined);
      }
      if (observed) {
        emit({ type: 'miss', storageKey, operation, fence, takeover, durationMs });
        // A listener runs inside this call and may hold the event loop up: past the runway
        // now, the operation would start after the store's deadline (the latrev review).
        const held = elapsed.now() - call.callStartedAt;
        if (held >= leaseBound) {
          const refused = failed(attempt, call, lateToStart(held), undefined);
          // Every `miss` has its `execution_end` (the runrev2 review: without it, `miss`
          // minus `execution_end` counted this refused acquisition as held for good), and
          // an `execution_end` of `lease_lost` its `lease_lost` (the otel review: counted in
          // `idem.execute` but not in `idem.results`). The acquisition is given back in the
          // background: this process no longer holds it.
          emit({
            type: 'lease_lost',
            storageKey,
            operation,
            fence,
            phase: 'start',
            durationMs: held,
          });
          emit({
            type: 'execution_end',
            storageKey,
            operation,
            fence,
            result: 'lease_lost',
            durationMs: held,
          });
          throw refused;
        }
      }
      const execution = new Execution(settings, storageKey, call.owner, {
        fence,
        takeover,
        origin,
        callStartedAt: call.callStartedAt,
        callStartedAtMono: elapsed === monotonicClock ? undefined : call.callStartedAtMono,
        tasks: context.tasks,
        operation,
        heartbeats: context.heartbeats,
        // The first renewal counts from the send, as the lease estimate does.
        roundTrip: context.heartbeats ? roundTrip : 0,
        giveBacks,
      });
      return { kind: 'acquired', execution };
    }
    const { record, now } = result;
    if (record.fingerprint !== attempt.fingerprint) {
      if (observed) emit({ type: 'mismatch', storageKey, operation, durationMs });
      throw new MismatchError();
    }
    if (record.status === 'completed') {
      let stored = record.outcome;
      // `execute` under the built-in JSON serializer, no codec: a recorded value's JSON text is
      // read straight from the record (its Latin-1 string, or its bytes) and parsed (no view,
      // no outcome object). Anything else is decoded from the bytes.
      const held = (record as Latin1Record).outcomeLatin1;
      if (held !== undefined) {
        const text = jsonValueTextOfLatin1(held);
        if (text !== undefined)
          return replayedJson(attempt, call, record, text, held.length, durationMs);
        stored = latin1Bytes(held);
      }
      if (!stored)
        throw new StoreUnavailableError('Store returned a completed record without an outcome');
      if (attempt.forExecute && viewReplays && !settings.codec) {
        const text = jsonValueText(stored);
        if (text !== undefined)
          return replayedJson(attempt, call, record, text, stored.length, durationMs);
      }
      let opened: StoredOutcome | Promise<StoredOutcome>;
      try {
        // A plain not-recorded marker (written when the codec could not seal one) is read
        // without the codec. Whatever else fails to open or decode is OUTCOME_CORRUPT,
        // never a replay. Without a view, the body is a copy.
        opened = openStoredOutcome(
          settings,
          storageKey,
          stored,
          attempt.forExecute && viewReplays ? JSON_VALUE_META : undefined,
        );
      } catch (error) {
        throw corrupt(attempt, call, record, error, durationMs);
      }
      const outcomeBytes = stored.length;
      if (!(opened instanceof Promise))
        return replayed(attempt, call, record, opened, outcomeBytes, durationMs);
      return opened.then(
        (outcome) => replayed(attempt, call, record, outcome, outcomeBytes, durationMs),
        (error: unknown) => {
          throw corrupt(attempt, call, record, error, durationMs);
        },
      );
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
    const remaining = attempt.waitUntil - performance.now();
    if (!settings.wait || remaining <= 0)
      throw new InProgressError(retryAfterMs, { fence: record.fence, storageKey });
    return { kind: 'wait', delayMs: Math.min(attempt.poll, remaining, retryAfterMs + 1) };
  }

  /** A recorded outcome that does not open or decode: reported; the error to throw. */
  function corrupt(
    attempt: Attempt,
    call: Call,
    record: StoredRecord,
    error: unknown,
    durationMs: number,
  ) {
    if (settings.observed) {
      const { storageKey, operation } = attempt;
      const { fence } = record;
      // The opening that failed, up to now (a codec's key service may have taken a while).
      const decodeMs = since(call.timedFrom) - durationMs;
      settings.emit({
        type: 'outcome_corrupt',
        storageKey,
        operation,
        fence,
        error,
        durationMs,
        decodeMs,
      });
    }
    return error;
  }

  /**
   * `execute`'s replay of a recorded `jsonSerializer` value whose JSON text is `text`: what
   * {@link replayed} gives for it (the value, or the parse error thrown after the event).
   */
  function replayedJson(
    attempt: Attempt,
    call: Call,
    record: StoredRecord,
    text: string,
    outcomeBytes: number,
    durationMs: number,
  ): Begun<T> {
    let value: T | undefined;
    let failure: { error: unknown } | undefined;
    try {
      value = JSON.parse(text) as T;
    } catch (error) {
      failure = { error };
    }
    if (settings.observed) {
      // As `replayed` reports it: from the store's answer to now, the value parsed.
      const decodeMs = since(call.timedFrom) - durationMs;
      const { storageKey, operation } = attempt;
      settings.emit({
        type: 'hit',
        storageKey,
        operation,
        fence: record.fence,
        outcomeBytes,
        durationMs,
        decodeMs,
      });
    }
    if (failure) throw failure.error;
    return { kind: 'replayed', value: value as T };
  }

  /** The replay of a recorded outcome (for `execute`: its value, or the error it recorded). */
  function replayed(
    attempt: Attempt,
    call: Call,
    record: StoredRecord,
    outcome: StoredOutcome,
    outcomeBytes: number,
    durationMs: number,
  ): Begun<T> {
    const { storageKey, operation, forExecute } = attempt;
    const { observed } = settings;
    const marker = readNotRecorded(outcome);
    // `execute` gets the value, decoded before any listener runs: a view of the record's
    // bytes is read before anything else can touch them.
    let value: T | undefined;
    let failure: { error: unknown } | undefined;
    if (forExecute && !marker) {
      try {
        value = context.replay(outcome);
      } catch (error) {
        failure = { error };
      }
    }
    const { fence } = record;
    if (observed) {
      // From the store's answer to now: the outcome opened and (for `execute`) its value
      // decoded, so a listener can place the acquire before it (the otelrev review).
      const decodeMs = since(call.timedFrom) - durationMs;
      settings.emit({
        type: 'hit',
        storageKey,
        operation,
        fence,
        outcomeBytes,
        durationMs,
        decodeMs,
      });
    }
    if (marker) throw new OutcomeNotRecordedError(marker.reason, marker);
    if (failure) throw failure.error;
    if (forExecute) return { kind: 'replayed', value: value as T };
    return { kind: 'replay', outcome, storageKey, fence };
  }

  return begin;
}
