import {
  canonicalJson,
  createIdempotency,
  deriveKey,
  fingerprint,
  type Idempotency,
  type IdempotencyOptions,
  type IdempotencyStore,
  type IdempotentRequest,
  InvalidInputError,
  isValidKey,
  type JsonValue,
  MAX_TIMER_MS,
  type Scope,
  type StoreCallContext,
  StoreUnavailableError,
} from '@idem/core';

/**
 * The part of the Lambda context this package reads (structurally compatible with
 * `Context` from `@types/aws-lambda`).
 */
export interface LambdaContextLike {
  /** Name of the function (`functionScope`, the batch handlers' default scope). */
  functionName: string;
  /** Milliseconds left before Lambda stops the invocation. */
  getRemainingTimeInMillis(): number;
}

/**
 * Engine options shared by every wrapper: those of `createIdempotency` in `@idem/core`
 * (store, leaseMs, retentionMs, heartbeatMs, storeTimeoutMs, isFinal, serializer, onEvent...)
 * except `wait`: a duplicate in progress always fails at once so that Lambda (or the broker)
 * retries it later instead of paying for an invocation that sleeps.
 */
export type EngineOptions<T> = Omit<IdempotencyOptions<T>, 'wait'>;

/**
 * Scope of the keys: what they are unique within. A value, or a function of the invocation.
 * Required by `makeIdempotent` and `idempotency()`; the batch handlers default to
 * {@link functionScope}.
 */
export type ScopeOption<TEvent, TContext> = Scope | ((event: TEvent, context: TContext) => Scope);

/**
 * The function-wide scope, `['lambda', context.functionName]`: every caller of the function
 * shares one key space. Right when no caller chooses the key (an id the event source or the
 * function itself assigns); for a key a client sends (an `orderId` in an API request), scope by
 * the caller instead, or two callers sending the same key share one record and the second gets
 * the first's response. The storage keys are those of the former default scope.
 */
export function functionScope(_event: unknown, context: LambdaContextLike): Scope {
  return ['lambda', context.functionName ?? ''];
}

/**
 * `InvalidInputError` unless `scope` is given (`makeIdempotent`, `idempotency()`): the keys of
 * these wrappers are often chosen by callers, and no default scope separates callers.
 */
export function checkScopeGiven(wrapper: string, scope: unknown): void {
  if (scope !== undefined && scope !== null) return;
  throw new InvalidInputError(
    `${wrapper} requires a scope: what its keys are unique within. For a key the caller chooses (an orderId in an API request), scope by the caller's principal, e.g. scope: (event) => ({ caller: event.requestContext.authorizer.principalId }) or a hash of the Authorization header; for keys no caller chooses, the function-wide scope (the previous default), pass scope: functionScope (exported by @idem/lambda)`,
  );
}

/** Milliseconds kept in hand before Lambda's deadline, by default. */
export const DEFAULT_TIMEOUT_MARGIN_MS = 1_000;

/**
 * Checks the user's engine options as `createIdempotency` does, before any clamping: a lease
 * or hold of 0 or less, NaN, a heartbeat not shorter than the lease... throw
 * `InvalidInputError` at creation (clamped by the time left, they would become a 1 ms lease
 * that any duplicate takes over while the first still runs).
 */
export function validateEngineOptions<T>(options: EngineOptions<T>): void {
  createIdempotency<T>(options);
}

/** `InvalidInputError` unless the options are an object. */
export function checkOptionsObject(options: unknown): void {
  if (typeof options !== 'object' || options === null)
    throw new InvalidInputError('The options must be an object ({ store, key, ... })');
}

/** `InvalidInputError` unless `value` is a function (or, when optional, undefined). */
export function checkFunction(name: string, value: unknown, optional = false): void {
  if (typeof value === 'function' || (optional && value === undefined)) return;
  throw new InvalidInputError(
    optional ? `${name} must be a function when given` : `${name} must be a function`,
  );
}

/**
 * The engine for one invocation. The lease is never longer than the time the invocation has
 * left, and heartbeats stop renewing it at the deadline (`maxHoldMs`): when Lambda stops a
 * timed-out invocation, its key becomes free for the retry at about that moment, never
 * later (Powertools' in-progress expiry, but renewed while the handler is alive). The options
 * must have passed {@link validateEngineOptions}: only valid values are clamped here.
 *
 * The claim (acquire) and reads are bounded by the deadline too: their time limit is the
 * smaller of `storeTimeoutMs` and the time left minus `marginMs` (at most half the time left,
 * so a function with a short timeout still makes progress), counted when the call is made. An
 * acquire with less than {@link MIN_STORE_CALL_MS} of that left is not sent at all: it fails
 * with an unsent `StoreUnavailableError`, so an invocation too close to its deadline to claim
 * its key fails at once and writes nothing (Lambda would freeze or stop a call made then
 * mid-way). The writes of a held key (complete, release, extend) are never cut by the margin:
 * they go on under `storeTimeoutMs`, before the deadline and past it. A completion cut at the
 * margin could not land in time at all, where one left alone lands until the deadline; a
 * late completion beats a second run (the rev33e review: a completion answering 0.7 s before
 * the deadline was cut at the 1 s margin, the invocation failed though its handler succeeded).
 * `{ callsUntil }` (the batch handlers) bounds them by that deadline on `performance.now()`
 * instead (the batch's own, computed once for the whole batch); `marginMs: false` leaves
 * store calls to `storeTimeoutMs`. With `heartbeatMs: false` the lease is the whole time left
 * (whatever `leaseMs` says): nothing renews it, and a shorter one would pass while the
 * handler still runs. A context whose clock reads `-Infinity` is past its
 * deadline: no claim is sent (the rev33e review: it took the unbounded path, ran the handler
 * under a 1 ms lease).
 */
export function engineForInvocation<T>(
  options: EngineOptions<T>,
  context: LambdaContextLike,
  marginMs: number | false | { callsUntil: number } = DEFAULT_TIMEOUT_MARGIN_MS,
): Idempotency<T> {
  const remaining = remainingMs(context);
  // Without heartbeats nothing renews the lease while the handler runs: one shorter than the
  // time left would pass while Lambda still runs the handler, and a retry would take the key
  // over and run beside it (edge34). It covers the whole invocation instead, as Powertools'
  // in-progress expiry does (a crashed invocation holds its key until its deadline). A
  // remaining time no Lambda has (over MAX_TIMER_MS) keeps the lease as given.
  const coversInvocation = options.heartbeatMs === false && remaining <= MAX_TIMER_MS;
  const leaseMs = Math.max(
    1,
    coversInvocation ? remaining : Math.min(options.leaseMs ?? 30_000, remaining),
  );
  const maxHoldMs = Math.max(1, Math.min(options.maxHoldMs ?? 3_600_000, remaining));
  // A heartbeat must be shorter than the lease; a capped lease takes a third as its beat.
  const heartbeatMs =
    options.heartbeatMs === false
      ? false
      : Math.min(options.heartbeatMs ?? leaseMs / 3, leaseMs / 3);
  if (remaining === Number.POSITIVE_INFINITY || marginMs === false)
    return createIdempotency<T>({ ...options, leaseMs, maxHoldMs, heartbeatMs });
  const storeTimeoutMs = options.storeTimeoutMs ?? DEFAULT_STORE_TIMEOUT_MS;
  const callsUntil =
    typeof marginMs === 'number'
      ? performance.now() + remaining - Math.min(marginMs, Math.max(0, remaining) / 2)
      : marginMs.callsUntil;
  return createIdempotency<T>({
    ...options,
    // core's own `storeTimeoutMs` stays as given: lowered to the time left at the start, it
    // would cut the completion too (the wrapper bounds the acquire at each call).
    store: boundedByDeadline(options.store, callsUntil, storeTimeoutMs),
    leaseMs,
    maxHoldMs,
    heartbeatMs,
  });
}

/** core's default `storeTimeoutMs`. */
const DEFAULT_STORE_TIMEOUT_MS = 5_000;

/** A store call with less time than this left before the invocation's deadline is not sent. */
export const MIN_STORE_CALL_MS = 10;

/**
 * `store` with its acquires and reads bounded by `callsUntil` (on `performance.now()`): an
 * acquire made with less than {@link MIN_STORE_CALL_MS} left before it is refused unsent; one
 * with less than `storeTimeoutMs` left is given up (its signal aborted, a
 * `StoreUnavailableError`) at `callsUntil`. A call with more time left is the store's own,
 * under core's time limit. The writes of a held key (complete, release, extend) are passed
 * through as they are: cut at the margin, they could only fail where they would have landed.
 */
export function boundedByDeadline(
  store: IdempotencyStore,
  callsUntil: number,
  storeTimeoutMs: number,
): IdempotencyStore {
  function bounded<I, R>(
    method: 'acquire' | 'complete' | 'release' | 'extend' | 'get',
    send: (input: I, call: StoreCallContext | undefined) => Promise<R>,
  ): (input: I, call?: StoreCallContext) => Promise<R> {
    return (input, call) => {
      // A write of a held key: under core's own limit, before the deadline or past it (a
      // completion made when the environment is thawed for a later invocation, or after
      // Middy's timeoutEarly). A late completion is better than a second run.
      if (method === 'complete' || method === 'release' || method === 'extend')
        return send(input, call);
      const left = callsUntil - performance.now();
      if (!(left >= MIN_STORE_CALL_MS) && method !== 'acquire') return send(input, call);
      if (!(left >= MIN_STORE_CALL_MS))
        return Promise.reject(
          new StoreUnavailableError(
            `Store ${method} not sent: ${Math.max(0, Math.floor(left))} ms left before the invocation's deadline (less than ${MIN_STORE_CALL_MS} ms, after the safety margin); Lambda would stop the call mid-way`,
            { unsent: true },
          ),
        );
      if (left >= storeTimeoutMs) return send(input, call);
      const controller = new AbortController();
      let signal: AbortSignal | undefined;
      const bound: StoreCallContext = {
        get signal() {
          signal ??= call ? AbortSignal.any([call.signal, controller.signal]) : controller.signal;
          return signal;
        },
      };
      return new Promise<R>((resolve, reject) => {
        const timer = setTimeout(() => {
          const error = new StoreUnavailableError(
            `Store ${method} not answered within ${Math.round(left)} ms, the time left before the invocation's deadline (after the safety margin)`,
          );
          controller.abort(error);
          reject(error);
        }, left);
        timer.unref?.();
        let sent: Promise<R>;
        try {
          sent = send(input, bound);
        } catch (error) {
          clearTimeout(timer);
          reject(error);
          return;
        }
        Promise.resolve(sent).then(
          (value) => {
            clearTimeout(timer);
            resolve(value);
          },
          (error: unknown) => {
            clearTimeout(timer);
            reject(error);
          },
        );
      });
    };
  }
  const wrapped: IdempotencyStore = {
    capabilities: store.capabilities,
    ...(store.admin ? { admin: store.admin } : {}),
    acquire: bounded('acquire', (input, call) => store.acquire(input, call)),
    complete: bounded('complete', (input, call) => store.complete(input, call)),
    release: bounded('release', (input, call) => store.release(input, call)),
    extend: bounded('extend', (input, call) => store.extend(input, call)),
    get: bounded('get', (key: string) => store.get(key)),
  };
  if (store.close) wrapped.close = () => store.close?.() ?? Promise.resolve();
  return wrapped;
}

/** Time left in the invocation; `Infinity` when the context has no clock (a local call). */
export function remainingMs(context: LambdaContextLike): number {
  const left =
    typeof context?.getRemainingTimeInMillis === 'function'
      ? context.getRemainingTimeInMillis()
      : Number.POSITIVE_INFINITY;
  return typeof left === 'number' && !Number.isNaN(left) ? left : Number.POSITIVE_INFINITY;
}

/**
 * An idempotency key from what a key function returned: a valid key string (1..255
 * printable ASCII) as it is; any other JSON value (an object, a long string) through
 * `deriveKey` (SHA-256 of its canonical JSON).
 */
export function toKey(value: JsonValue | undefined): string {
  if (value === undefined || value === null || value === '')
    throw new InvalidInputError('The key function returned no key (undefined, null or "")');
  if (typeof value === 'string' && isValidKey(value)) return value;
  const hashed = asHashed(value);
  if (namesNothing(hashed))
    throw new InvalidInputError(
      'The key function returned an object or array holding nothing but undefined, null or "" (a missing field?): every such event would share one key',
    );
  // (The same key as `deriveKey(value)`: canonical JSON of its own output is that output.)
  return deriveKey(hashed);
}

/**
 * `value` as canonical JSON writes it, read once: `toJSON` results (an invalid Date is `null`),
 * no undefined member, no named property of an array, getters read a single time. What is
 * checked is then what is hashed. `NotCanonicalError` for what canonical JSON refuses; its
 * depth limit bounds {@link namesNothing}.
 */
function asHashed(value: unknown): JsonValue {
  return JSON.parse(canonicalJson(value)) as JsonValue;
}

/**
 * True for a JSON value that would be the same for every event missing the fields it reads:
 * null, '', or an object or array with nothing else in it (what `{ orderId: event.orderId }`
 * gives without an orderId: canonical JSON drops the undefined member, leaving `{}`).
 */
function namesNothing(value: JsonValue): boolean {
  if (value === null || value === '') return true;
  if (typeof value !== 'object') return false;
  return Object.values(value).every((member) => member === undefined || namesNothing(member));
}

/** The request for `execute`: key, scope and fingerprint of one invocation or record. */
export function requestFor<TEvent, TContext extends LambdaContextLike>(
  event: TEvent,
  context: TContext,
  key: JsonValue | undefined,
  payload: JsonValue | undefined,
  scope: ScopeOption<TEvent, TContext> | undefined,
): IdempotentRequest {
  let resolvedScope: Scope;
  if (typeof scope === 'function') {
    const answer: unknown = scope(event, context);
    // (`{ tenant: event.tenant }` without a tenant: every such caller would share one scope.)
    // The engine derives the storage key from the copy checked: the same canonical JSON.
    const checked = answer === undefined ? null : asHashed(answer);
    if (namesNothing(checked))
      throw new InvalidInputError(
        'The scope function returned nothing but undefined, null or "" (a missing tenant?): every such event would share one scope',
      );
    resolvedScope = checked;
  } else resolvedScope = scope ?? functionScope(event, context);
  return {
    key: toKey(key),
    scope: resolvedScope,
    fingerprint: payload === undefined ? '' : fingerprint({ body: payload }),
  };
}
