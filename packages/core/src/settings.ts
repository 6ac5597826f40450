import { type Clock, systemClock } from './clock.js';
import { InvalidInputError, shownInput } from './errors.js';
import type { IdemEventListener } from './events.js';
import type { ExecutionSettings } from './execution.js';
import type { OutcomeCodec } from './outcome-sealing.js';
import type { OutcomeSerializer } from './serializer.js';
import type { IdempotencyStore } from './store.js';
import { isThenable } from './store-call.js';

/** How an operation ended, as the outcome policy sees it. */
export type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** Decides whether an outcome is final (recorded and replayed) or released for a retry. */
export type OutcomePolicy<T> = (settled: Settled<T>) => boolean;

/** Default policy: successes are final, failures are released so a retry runs again. */
export const successOnly: OutcomePolicy<unknown> = (settled) => settled.ok;

/**
 * Stripe's policy: once execution started, every outcome is final, failures included
 * (replayed as `ReplayedFailureError`).
 */
export const everythingFinal: OutcomePolicy<unknown> = () => true;

const noop = () => {};

/**
 * An outcome policy's answer as the engine reads it: by its truthiness (`1` keeps, `undefined`
 * releases), except a Promise or another thenable (an `async` isFinal), which says nothing of
 * the outcome (it is truthy, so every failure was recorded as final) and may reject where
 * nobody handles it (the default Node settings end the process): refused with
 * `InvalidInputError`, which the caller handles as a policy that threw, its rejection handled
 * here. For integrations that ask a policy themselves.
 * @internal
 */
export function outcomePolicyAnswer(answer: unknown): boolean {
  if (typeof answer === 'boolean') return answer;
  if (
    ((typeof answer === 'object' && answer !== null) || typeof answer === 'function') &&
    typeof (answer as { then?: unknown }).then === 'function'
  ) {
    Promise.resolve(answer).then(noop, noop);
    throw new InvalidInputError(
      'isFinal answered a Promise: the outcome policy must answer true or false synchronously (an async isFinal is not supported)',
    );
  }
  return Boolean(answer);
}

/**
 * `InvalidInputError` unless `isFinal` is undefined or a plain function: an `async` one
 * answers a Promise (see {@link outcomePolicyAnswer}), refused before any operation runs.
 * @internal
 */
export function checkOutcomePolicy(isFinal: unknown, name = 'isFinal'): void {
  if (isFinal === undefined) return;
  if (typeof isFinal !== 'function')
    throw new InvalidInputError(`${name} must be a function (settled) => boolean`);
  const tag = Object.prototype.toString.call(isFinal);
  if (tag === '[object AsyncFunction]' || tag === '[object AsyncGeneratorFunction]')
    throw new InvalidInputError(
      `${name} must answer true or false synchronously: an async function answers a Promise, which says nothing of the outcome`,
    );
}

/**
 * Bounded wait on a key in progress, instead of failing at once with `IN_PROGRESS`. Both
 * durations MUST be positive and finite (`InvalidInputError` at creation otherwise).
 */
export interface WaitOptions {
  /** Longest total wait, in ms. */
  timeoutMs: number;
  /** First poll interval in ms; grows by half each poll, up to 1 s. @default 50 */
  pollMs?: number;
}

/** Default of {@link IdempotencyOptions.maxOutcomeBytes}: 8 MiB. */
export const DEFAULT_MAX_OUTCOME_BYTES = 8 * 1024 * 1024;

/** Options of `createIdempotency`. Durations are milliseconds. */
export interface IdempotencyOptions<T = unknown> {
  /** Where records live. */
  store: IdempotencyStore;
  /** Lease of an in-progress record. @default 30_000 */
  leaseMs?: number;
  /** Heartbeat interval that renews the lease, or `false` for none. @default leaseMs / 3 */
  heartbeatMs?: number | false;
  /** Longest time heartbeats keep renewing one lease (and a failing final write is retried). @default 3_600_000 (1 h) */
  maxHoldMs?: number;
  /** How long a completed outcome is replayed. @default 86_400_000 (24 h) */
  retentionMs?: number;
  /** Time limit of one store call; past it the call fails with `STORE_UNAVAILABLE`. @default 5_000 */
  storeTimeoutMs?: number;
  /**
   * How long `complete` (and so `execute`) retries a failing final write before it rejects
   * with `STORE_UNAVAILABLE`; the retries go on in the background until the write lands, the
   * key is taken over or `maxHoldMs` passes. @default storeTimeoutMs
   */
  completionWaitMs?: number;
  /**
   * Largest encoded outcome recorded, in bytes (the store's own limit applies too, whichever
   * is lower). A larger one is not recorded: a small final marker takes its place, the caller
   * gets `OUTCOME_TOO_LARGE` and replays get `OUTCOME_NOT_RECORDED`, so the operation never
   * runs twice. `Infinity` leaves only the store's limit. @default 8_388_608 (8 MiB)
   */
  maxOutcomeBytes?: number;
  /** Bounded wait on a key in progress, or `false` to fail at once with `IN_PROGRESS`. @default false */
  wait?: WaitOptions | false;
  /** Which outcomes are final. @default successOnly */
  isFinal?: OutcomePolicy<T>;
  /** How values become stored outcomes and back. @default jsonSerializer */
  serializer?: OutcomeSerializer<T>;
  /**
   * Local clock for lease bookkeeping (the store decides expiry by its own clock). With the
   * default `systemClock` the engine measures every duration (the lease from the acquire's
   * send, heartbeats, the watchdog, `maxHoldMs`, the final write's retries, a give-back's
   * deadline) on a monotonic clock (`performance.timeOrigin + performance.now()`), so a
   * stepped wall clock moves none of them; an injected clock is used as given (a `ManualClock`
   * drives them in tests), except that a lease is never counted longer than its elapsed time
   * from the send (`performance.now()`): one stepped back cannot keep a signal live past the
   * store's lease. @default systemClock
   */
  clock?: Clock;
  /**
   * Receives events (see `IdemEvent`): hit / miss / conflict / mismatch / lease_lost /
   * store_error, store-call latencies, outcome sizes and the end of each acquisition. Without
   * a listener no event is built. `@idem/otel` turns them into spans and metrics.
   */
  onEvent?: IdemEventListener;
  /**
   * Seals outcomes before the store and opens them after: `createOutcomeCodec({ keys,
   * compressAboveBytes })` encrypts with AES-256-GCM bound to the storage key and compresses
   * large ones. An outcome it cannot open is `OUTCOME_CORRUPT`, never replayed. `maxOutcomeBytes`
   * applies to the sealed bytes. @default none (outcomes stored as encoded)
   */
  outcomeCodec?: OutcomeCodec;
}

/** Resolved settings, exposed for integrations. */
export interface ResolvedSettings extends ExecutionSettings {
  wait: WaitOptions | false;
}

// setTimeout fires at once past 2^31 - 1 ms; durations that drive a timer must stay below.
const MAX_TIMER_MS = 2_147_483_647;

function positive(name: string, value: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!(typeof value === 'number' && Number.isFinite(value) && value > 0 && value <= max))
    throw new InvalidInputError(`${name} must be a positive number of ms, at most ${max}`);
  return value;
}

function outcomeCap(option: number | undefined, store: IdempotencyStore): number {
  const cap = option ?? DEFAULT_MAX_OUTCOME_BYTES;
  if (!(cap === Number.POSITIVE_INFINITY || (Number.isSafeInteger(cap) && cap > 0)))
    throw new InvalidInputError('maxOutcomeBytes must be a positive integer (or Infinity)');
  return Math.min(cap, store.capabilities.maxOutcomeBytes ?? Number.POSITIVE_INFINITY);
}

const isFunction = (value: unknown): boolean => typeof value === 'function';

function checkStore(store: unknown): asserts store is IdempotencyStore {
  if (typeof store !== 'object' || store === null)
    throw new InvalidInputError('A store is required');
  const candidate = store as Record<string, unknown>;
  const missing = ['acquire', 'complete', 'release', 'extend'].filter(
    (name) => !isFunction(candidate[name]),
  );
  if (missing.length > 0 || typeof candidate.capabilities !== 'object' || !candidate.capabilities)
    throw new InvalidInputError(
      `The store must implement IdempotencyStore (capabilities, acquire, complete, release, extend)${missing.length > 0 ? `; missing ${missing.join(', ')}` : ''}`,
    );
}

/** Checks the hooks: a wrong one would fail only at request time, after the operation ran. */
function checkHooks<T>(options: IdempotencyOptions<T>): void {
  const { isFinal, serializer, onEvent, clock, outcomeCodec } = options;
  checkOutcomePolicy(isFinal);
  if (
    serializer !== undefined &&
    !(isFunction(serializer?.serialize) && isFunction(serializer?.deserialize))
  )
    throw new InvalidInputError('serializer must have serialize and deserialize methods');
  if (onEvent !== undefined && !isFunction(onEvent))
    throw new InvalidInputError('onEvent must be a function');
  if (clock !== undefined && !isFunction(clock?.now))
    throw new InvalidInputError('clock must have a now() method');
  if (clock !== undefined) {
    // Read once: a clock that answers a string (a time taken from a header) would make
    // `now + leaseMs` a concatenation, and the local lease estimate centuries long.
    const now: unknown = clock.now();
    if (!(typeof now === 'number' && Number.isFinite(now)))
      throw new InvalidInputError(
        `clock.now() must return a finite number of epoch milliseconds; got ${shownInput(now)}`,
      );
  }
  if (
    outcomeCodec !== undefined &&
    !(isFunction(outcomeCodec?.seal) && isFunction(outcomeCodec?.open))
  )
    throw new InvalidInputError('outcomeCodec must have seal and open methods');
}

/** `false`, or a bounded wait: a finite timeout and a positive poll interval. */
function checkWait(wait: unknown): WaitOptions | false {
  if (wait === undefined || wait === false) return false;
  if (typeof wait !== 'object' || wait === null)
    throw new InvalidInputError('wait must be false or { timeoutMs, pollMs? }');
  const { timeoutMs, pollMs } = wait as Partial<WaitOptions>;
  positive('wait.timeoutMs', timeoutMs as number, MAX_TIMER_MS);
  if (pollMs !== undefined) positive('wait.pollMs', pollMs, MAX_TIMER_MS);
  return wait as WaitOptions;
}

/** Resolves options and defaults; throws `InvalidInputError` on a bad value. */
export function resolveSettings<T>(options: IdempotencyOptions<T>): ResolvedSettings {
  if (typeof options !== 'object' || options === null)
    throw new InvalidInputError('createIdempotency needs an options object with a store');
  checkStore(options.store);
  checkHooks(options);
  const leaseMs = positive('leaseMs', options.leaseMs ?? 30_000, MAX_TIMER_MS);
  const heartbeat = options.heartbeatMs === undefined ? leaseMs / 3 : options.heartbeatMs;
  if (
    heartbeat !== false &&
    !(typeof heartbeat === 'number' && heartbeat > 0 && heartbeat < leaseMs)
  ) {
    throw new InvalidInputError('heartbeatMs must be false, or positive and shorter than leaseMs');
  }
  const storeTimeoutMs = positive('storeTimeoutMs', options.storeTimeoutMs ?? 5_000, MAX_TIMER_MS);
  const listener = options.onEvent;
  return {
    store: options.store,
    clock: options.clock ?? systemClock,
    leaseMs,
    heartbeatMs: heartbeat,
    maxHoldMs: positive('maxHoldMs', options.maxHoldMs ?? 3_600_000),
    retentionMs: positive('retentionMs', options.retentionMs ?? 86_400_000),
    storeTimeoutMs,
    completionWaitMs: positive(
      'completionWaitMs',
      options.completionWaitMs ?? storeTimeoutMs,
      MAX_TIMER_MS,
    ),
    maxOutcomeBytes: outcomeCap(options.maxOutcomeBytes, options.store),
    wait: checkWait(options.wait),
    codec: options.outcomeCodec,
    observed: listener !== undefined,
    emit: (event) => {
      try {
        // A broken listener must not break a request, nor (async, rejecting) the process.
        const result: unknown = listener?.(event);
        // Any thenable, not only this realm's Promise: an async listener made in another realm
        // (a vm context, a sandbox) answers a Promise of its own, which rejects all the same.
        if (result instanceof Promise) result.catch(ignore);
        else if (isThenable(result)) Promise.resolve(result).catch(ignore);
      } catch {
        // As above (a thenable whose `then` getter throws included).
      }
    },
  };
}

const ignore = () => {};
