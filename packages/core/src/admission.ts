import {
  InvalidInputError,
  invalidRangeInput,
  StoreUnavailableError,
  shownValue,
} from './errors.js';
import type { IdempotencyStore, StoreCallContext } from './store.js';

/** Longest delay a Node timer holds; a longer one fires after 1 ms. */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * What a call is for. `sheddable` work can be refused at no cost but a retry: it starts
 * something (a request's acquire, a read) or only hurries something up (a release, whose
 * key is otherwise freed when its lease passes). `essential` work finishes what a request
 * already holds (complete, extend, and any write an executor makes while it holds a key): it
 * is never refused, because refusing it would waste the work already done and could lose a
 * lease, but it counts toward the calls in flight, so sheddable work waits for it.
 */
export type AdmissionKind = 'sheddable' | 'essential';

/** Options of {@link createAdmission}. */
export interface AdmissionOptions {
  /**
   * A call that takes longer than this (or fails after at least this long) is a sign the
   * store is queueing: the limit shrinks. Pick a fraction of the store timeout (a quarter
   * leaves room for the calls admitted to finish in time), well above the store's normal
   * latency. Below half of it the limit grows by one per answer, above by one per round trip.
   */
  targetLatencyMs: number;
  /** Calls in flight allowed at first (an integer, kept within the limits). @default 16 */
  initialLimit?: number;
  /** The limit never shrinks below this. @default 2 */
  minLimit?: number;
  /** The limit never grows above this. @default 256 */
  maxLimit?: number;
  /**
   * Sheddable calls that find the limit reached wait for a free slot, first come first
   * served, at most this many at once; past it they are refused at once. Waiting callers are
   * served in order rather than by luck: under a backlog of retries, a new request gets a
   * slot within `maxWaitMs` or a prompt refusal. @default 64
   */
  maxQueue?: number;
  /**
   * Longest a sheddable call waits for a slot before it is refused (at most 2^31 - 1, a
   * timer's limit). @default targetLatencyMs / 2
   */
  maxWaitMs?: number;
  /**
   * Milliseconds since some fixed point; injectable for tests. @default performance.now
   *
   * Read when a call starts and when it settles. If it throws when a call starts, that call
   * rejects with its error, the store is not called and no slot is taken; if it throws when
   * a call settles, the call's own answer is kept and only its latency goes unmeasured, as
   * when it answers what is no finite number (NaN, Infinity) at either end, or an end before
   * the start (a clock that went back: a later decrease is not held back by it either).
   * Either way the calls in flight stay exact.
   */
  now?: () => number;
}

/** Options of one {@link Admission.run}. */
export interface AdmissionRunOptions {
  /**
   * The caller's signal (a store call's `StoreCallContext.signal`: it aborts once the caller
   * stopped waiting, at `storeTimeoutMs`). A call waiting for a slot when it aborts, or found
   * aborted when it would wait, leaves the queue and is never sent: it rejects with an unsent
   * `StoreUnavailableError` (its `cause` the signal's reason). Read only when the call would
   * wait (a getter that makes the signal on first read costs nothing on the fast path).
   */
  readonly signal?: AbortSignal | undefined;
}

/** A shared, adaptive limit on calls in flight to one store (see {@link createAdmission}). */
export interface Admission {
  /**
   * Runs `call`: `essential` work always; `sheddable` work while fewer calls than the limit
   * are in flight, or once a slot frees within `maxWaitMs` (first come, first served, at most
   * `maxQueue` waiting); otherwise it rejects with a `StoreUnavailableError` (`unsent`:
   * nothing reached the store). The call counts as in flight until it settles.
   */
  run<T>(kind: AdmissionKind, call: () => Promise<T>, options?: AdmissionRunOptions): Promise<T>;
  /** The current limit: sheddable work is refused while this many calls are in flight. */
  readonly limit: number;
  /** Calls in flight now. */
  readonly inFlight: number;
  /** Sheddable calls waiting for a slot now. */
  readonly waiting: number;
  /** Calls refused so far, for metrics. */
  readonly refused: number;
}

/**
 * An adaptive concurrency limit in front of a store, so that a slow or recovering store is
 * never buried under more calls than it can answer in time (additive increase,
 * multiplicative decrease on latency). Without it, a store that slows down (a cold restart,
 * a throttled table, a loaded emulator) gets every request's calls at once; they pass the
 * store timeout, clients retry, and the queue of calls nobody waits for any more keeps the
 * store from ever catching up. With it, calls beyond the limit are refused at once (a 503 and
 * `Retry-After` for the client), the calls admitted finish in time, and throughput stays at
 * what the store can do. Work that finishes a held key (`essential`) is never refused, so an
 * admitted request runs to its end: new requests are refused instead, and an executor never
 * misses its renewal or its completion for the limit's sake. Essential work is bounded by
 * the executions admitted, since each of them made a sheddable acquire first.
 *
 * Bad options throw `InvalidInputError` (`INVALID_INPUT`); those out of range are
 * `RangeError`s too, as they were before the library had typed errors.
 *
 * It changes no answer of the store; it only refuses calls. Share one per store client
 * (the idempotency store and any other table the same client writes).
 */
export function createAdmission(options: AdmissionOptions): Admission {
  if (typeof options !== 'object' || options === null)
    throw new InvalidInputError('createAdmission needs an options object with targetLatencyMs');
  const target = options.targetLatencyMs;
  if (!(typeof target === 'number' && target > 0 && target <= 2 * MAX_TIMER_MS)) {
    throw invalidRangeInput(
      `targetLatencyMs must be a positive number of at most ${2 * MAX_TIMER_MS} (got ${shownValue(target)})`,
    );
  }
  const minLimit = options.minLimit ?? 2;
  const maxLimit = options.maxLimit ?? 256;
  if (!(Number.isInteger(minLimit) && minLimit >= 1 && Number.isInteger(maxLimit))) {
    throw invalidRangeInput('minLimit and maxLimit must be integers, minLimit at least 1');
  }
  if (maxLimit < minLimit) throw invalidRangeInput('maxLimit must not be below minLimit');
  const initialLimit = options.initialLimit ?? 16;
  if (!(Number.isInteger(initialLimit) && initialLimit >= 1)) {
    throw invalidRangeInput(
      `initialLimit must be a positive integer (got ${shownValue(initialLimit)})`,
    );
  }
  const maxQueue = options.maxQueue ?? 64;
  const maxWaitMs = options.maxWaitMs ?? target / 2;
  if (!(Number.isInteger(maxQueue) && maxQueue >= 0)) {
    throw invalidRangeInput(
      `maxQueue must be a non-negative integer (got ${shownValue(maxQueue)})`,
    );
  }
  if (!(typeof maxWaitMs === 'number' && maxWaitMs >= 0 && maxWaitMs <= MAX_TIMER_MS)) {
    throw invalidRangeInput(
      `maxWaitMs must be a non-negative number of at most ${MAX_TIMER_MS} (got ${shownValue(maxWaitMs)})`,
    );
  }
  if (options.now !== undefined && typeof options.now !== 'function')
    throw new InvalidInputError('now must be a function answering milliseconds');
  const now = options.now ?? (() => performance.now());
  let limit = Math.min(maxLimit, Math.max(minLimit, initialLimit));
  let inFlight = 0;
  let refused = 0;
  // One decrease per congestion episode: calls that started before the last decrease
  // report the old congestion and must not shrink the limit again.
  let lastDecreaseAt = Number.NEGATIVE_INFINITY;
  /** Sheddable calls waiting for a slot, oldest first. */
  const queue: { go: () => void; timer: ReturnType<typeof setTimeout> }[] = [];

  const overloaded = () => {
    refused++;
    return new StoreUnavailableError(
      `Store overloaded: ${inFlight} calls in flight (limit ${Math.floor(limit)}); try again shortly`,
      { unsent: true },
    );
  };

  /** The error of a call whose caller gave up while it waited for a slot: never sent. */
  const givenUp = (signal: AbortSignal) =>
    new StoreUnavailableError(
      'Store call given up by its caller while waiting for a slot: not sent',
      {
        cause: signal.reason,
        unsent: true,
      },
    );

  /** A reading of the clock, or undefined when the injected `now` throws. */
  const reading = (): number | undefined => {
    try {
      return now();
    } catch {
      return undefined;
    }
  };

  const adapt = (endedAt: number, took: number, startedAt: number, failed: boolean) => {
    if (took >= target) {
      if (startedAt >= lastDecreaseAt) {
        limit = Math.max(minLimit, limit * 0.7);
        lastDecreaseAt = endedAt;
      }
    } else if (!failed && inFlight + 1 >= limit / 2) {
      // Grow only while the limit is in use: idle time says nothing about capacity. Far
      // below the target the store is not queueing: one more slot per answer (the limit
      // doubles every round trip, so it is back within a few round trips after an outage);
      // closer to it, one more slot per round trip.
      limit = Math.min(maxLimit, limit + (took < target / 2 ? 1 : 1 / limit));
    }
  };

  const settle = (startedAt: number, failed: boolean) => {
    // The slot is freed first and the queue served last, whatever the clock does: a clock
    // that throws here costs this call's latency sample, never its slot nor its answer (the
    // store has answered; a completion that succeeded must not be reported as failed).
    inFlight--;
    const endedAt = reading();
    // Unmeasured (the clock threw, or answered what is no finite time at either end: NaN,
    // Infinity): the limit stays as it is. An infinite end taken as a reading would hold
    // every later decrease back (`lastDecreaseAt`), a NaN one would grow the limit whatever
    // the latency (the corerev3 review).
    if (endedAt !== undefined && Number.isFinite(endedAt)) {
      // A reading before the last decrease: the clock went back (an injected `Date.now`
      // stepped back by NTP, a reading that had jumped ahead). The decrease is taken as made
      // now: left where it was, it would hold back every decrease until the clock caught up
      // with it, an hour for an hour's step (the corerev4 review).
      if (endedAt < lastDecreaseAt) lastDecreaseAt = endedAt;
      // A call that ended before it started (the clock went back during it) says nothing
      // about the latency: a negative one would grow the limit as a fast answer.
      if (Number.isFinite(startedAt) && endedAt >= startedAt)
        adapt(endedAt, endedAt - startedAt, startedAt, failed);
    }
    while (queue.length > 0 && inFlight < Math.floor(limit)) queue.shift()?.go();
  };

  /** Never throws: every failure, the clock's included, is a rejection. */
  function start<T>(call: () => Promise<T>): Promise<T> {
    // The clock is read before the slot is taken: a clock that throws fails this call
    // (its own error, as a rejection; the store is not called) and holds no slot.
    let startedAt: number;
    try {
      startedAt = now();
    } catch (error) {
      return Promise.reject(error);
    }
    inFlight++;
    let pending: Promise<T>;
    try {
      pending = Promise.resolve(call());
    } catch (error) {
      settle(startedAt, true);
      return Promise.reject(error);
    }
    return pending.then(
      (value) => {
        settle(startedAt, false);
        return value;
      },
      (error: unknown) => {
        settle(startedAt, true);
        throw error;
      },
    );
  }

  return {
    run<T>(kind: AdmissionKind, call: () => Promise<T>, options?: AdmissionRunOptions): Promise<T> {
      if (kind === 'essential' || (inFlight < Math.floor(limit) && queue.length === 0)) {
        return start(call);
      }
      if (queue.length >= maxQueue || maxWaitMs === 0) return Promise.reject(overloaded());
      const signal = options?.signal;
      if (signal?.aborted) return Promise.reject(givenUp(signal));
      return new Promise<T>((resolve, reject) => {
        const leave = () => {
          clearTimeout(waiter.timer);
          signal?.removeEventListener('abort', onAbort);
          const at = queue.indexOf(waiter);
          if (at >= 0) queue.splice(at, 1);
        };
        // The caller gave up (its time limit): out of the queue, never sent (no late write,
        // no slot spent on a call nobody waits for, no memory held until `maxWaitMs`).
        const onAbort = () => {
          leave();
          reject(givenUp(signal as AbortSignal));
        };
        const waiter = {
          go: () => {
            leave();
            start(call).then(resolve, reject);
          },
          timer: setTimeout(() => {
            leave();
            reject(overloaded());
          }, maxWaitMs),
        };
        // A waiting call must not keep a process alive; its caller's own timer does.
        waiter.timer.unref?.();
        signal?.addEventListener('abort', onAbort, { once: true });
        queue.push(waiter);
      });
    },
    get limit() {
      return Math.floor(limit);
    },
    get inFlight() {
      return inFlight;
    },
    get waiting() {
      return queue.length;
    },
    get refused() {
      return refused;
    },
  };
}

/**
 * The store behind `admission`: `acquire`, `get` and `release` are sheddable (a refused
 * release leaves the key to its lease), `complete` and `extend` are essential. Every answer is the store's own; a refused call is a
 * `StoreUnavailableError`, which the engine treats like any store failure (503, retries).
 * The store's `admin` is passed through unadmitted: an operator's call is never shed.
 */
export function admitStore(store: IdempotencyStore, admission: Admission): IdempotencyStore {
  // Checked here: a call through a missing `run` would fail as a store outage, for ever.
  if (typeof store !== 'object' || store === null)
    throw new InvalidInputError('admitStore needs a store');
  if (typeof (admission as Partial<Admission> | null)?.run !== 'function')
    throw new InvalidInputError('admitStore needs an admission made by createAdmission');
  const admitted: IdempotencyStore = {
    capabilities: store.capabilities,
    ...(store.admin ? { admin: store.admin } : {}),
    acquire: (input, call) =>
      admission.run('sheddable', () => store.acquire(input, call), signalOf(call)),
    get: (key) => admission.run('sheddable', () => store.get(key)),
    release: (input, call) =>
      admission.run('sheddable', () => store.release(input, call), signalOf(call)),
    complete: (input, call) => admission.run('essential', () => store.complete(input, call)),
    extend: (input, call) => admission.run('essential', () => store.extend(input, call)),
  };
  if (store.close) admitted.close = () => store.close?.() ?? Promise.resolve();
  return admitted;
}

/**
 * The run options carrying `call`'s signal, read only when the admission reads it (a call
 * that would wait): core makes a call's signal on its first read.
 */
function signalOf(call: StoreCallContext | undefined): AdmissionRunOptions | undefined {
  if (call === undefined) return undefined;
  return {
    get signal() {
      return call.signal;
    },
  };
}
