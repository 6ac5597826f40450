import { BackgroundTasks } from './background.js';
import { createBegin } from './begin.js';
import {
  InvalidInputError,
  isIdemError,
  OutcomeCorruptError,
  OutcomeNotRecordedError,
  ReplayedFailureError,
} from './errors.js';
import type { Execution } from './execution.js';
import { FixedDelayTimers } from './fixed-delay-timers.js';
import { GiveBacks } from './give-back.js';
import type {
  BeginOptions,
  BeginResult,
  DrainOptions,
  ExecuteResult,
  Idempotency,
  IdempotentRequest,
  OperationContext,
} from './idempotency-types.js';
import { noteMarkerFailure } from './not-recorded.js';
import { hasInternalState, isNativeError } from './object-brands.js';
import type { StoredOutcome } from './outcome-codec.js';
import { failureOutcome, wrapValue } from './recorded-outcomes.js';
import { jsonSerializer, type OutcomeSerializer } from './serializer.js';
import {
  type IdempotencyOptions,
  type OutcomePolicy,
  outcomePolicyAnswer,
  resolveSettings,
  type Settled,
  successOnly,
} from './settings.js';

/** Where the context keeps its execution (a symbol: not among the context's string keys). */
const EXECUTION = Symbol('execution');
/** Where the context keeps an outcome decided by `decideOutcome` (set only then). */
const DECIDED = Symbol('decided');

/**
 * What `execute` hands the operation. `signal` is read on demand (most operations never look
 * at it, and an AbortController is not free), as an own enumerable accessor in the order a
 * plain object literal had its members (`{ ...context }` and `Object.keys` still see it). A
 * class with one shared descriptor: an object literal with a getter is built through the
 * runtime each time, measured about ten times slower.
 */
class ExecutionContext implements OperationContext {
  static readonly #signal: PropertyDescriptor = {
    // Through the receiver's property, not a private field: a Proxy of the context, or an
    // object made with it as its prototype, still reads the signal.
    get(this: ExecutionContext): AbortSignal {
      return this[EXECUTION].signal;
    },
    enumerable: true,
    configurable: true,
  };
  static readonly #originId: PropertyDescriptor = {
    get(this: ExecutionContext): string {
      return this[EXECUTION].originId;
    },
    enumerable: true,
    configurable: true,
  };
  // Declared only: made in the constructor, in the literal's order.
  declare readonly fence: number;
  declare readonly signal: AbortSignal;
  declare readonly storageKey: string;
  declare readonly originId: string;
  readonly [EXECUTION]: Execution;
  declare [DECIDED]?: boolean;
  constructor(execution: Execution) {
    this[EXECUTION] = execution;
    this.fence = execution.fence;
    Object.defineProperty(this, 'signal', ExecutionContext.#signal);
    this.storageKey = execution.storageKey;
    // Read when used: a digest the operations that do not name anything by it never pay.
    Object.defineProperty(this, 'originId', ExecutionContext.#originId);
  }
}

/**
 * Tells `execute`, from inside the operation it runs with `ctx`, whether the outcome is final,
 * instead of asking `isFinal` of it: for an engine over core that asks the policy itself
 * before anything commits (the Postgres transactional engine). Bound to this execution by
 * its context, never by the outcome: two executions that end with the same value (`'ok'`)
 * can never take each other's decision.
 * @internal
 */
export function decideOutcome(ctx: OperationContext, final: boolean): void {
  if (!(typeof ctx === 'object' && ctx !== null && EXECUTION in ctx))
    throw new InvalidInputError('decideOutcome needs the context execute gave the operation');
  (ctx as ExecutionContext)[DECIDED] = final;
}

/**
 * `error`, what stopped the recording of a success the outcome policy failed to judge,
 * carrying the policy's own error as `policyError` (see `IdemError.policyError`): the caller
 * gets the recording's error as before, and the policy's fault, which it would have got had
 * the recording landed, is not lost.
 *
 * `fresh`: the error was made for this call (core's own). Any other (a store's error, which
 * passes through as it is, may be one instance thrown to every call: a cached connection
 * failure, a constant) is never changed: the caller gets a copy of it (the same prototype,
 * so the same class and `instanceof`, and its own properties: message, stack, cause, code,
 * fields) carrying the policy's error, so that one call's policy fault never reaches
 * another's caller (the corerev review). An error that cannot be copied or take a property
 * (frozen, a proxy that refuses), or is no object, is thrown as it is.
 */
function withPolicyError(error: unknown, policyError: unknown, fresh = false): unknown {
  return carrying(error, { policyError }, fresh);
}

/**
 * `policyError`, what the outcome policy threw about a failed operation, carrying the
 * operation's own error as `operationError`, and as `cause` when it has none (so that a log
 * of the error shows both): the caller gets the policy's error, as before, and the
 * operation's failure is not lost. What the policy threw is the caller's own and may be one
 * instance thrown for every call: it is never changed, a copy carries the operation's error
 * (see {@link withPolicyError}). Core's own error (an answer that is a Promise) is copied
 * too: telling it apart would read the answer again, and a getter of the user's may throw.
 */
function withOperationError(policyError: unknown, operationError: unknown): unknown {
  // A policy that rethrows the operation's own error: the caller gets that error as it is.
  if (Object.is(policyError, operationError)) return policyError;
  const carried: Record<string, unknown> = { operationError };
  let hasCause = true;
  try {
    hasCause = typeof policyError !== 'object' || policyError === null || 'cause' in policyError;
  } catch {
    // A proxy that refuses: thrown as it is below.
  }
  if (!hasCause) carried.cause = operationError;
  return carrying(policyError, carried, false);
}

/** `error` (or a copy of it unless `fresh`) with `carried` as own properties; see withPolicyError. */
function carrying(error: unknown, carried: Record<string, unknown>, fresh: boolean): unknown {
  if (typeof error !== 'object' || error === null) return error;
  try {
    if (!Object.isExtensible(error)) return error;
    const carrier = fresh ? error : copyOf(error);
    if (carrier === undefined) return error;
    for (const [name, value] of Object.entries(carried))
      Object.defineProperty(carrier, name, {
        value,
        // Not enumerable, as `new Error(message, { cause })` makes `cause` and a native
        // `AggregateError` its `errors`: `JSON.stringify` of the error (a logger's) neither
        // dumps the carried error nor throws on a cycle in it, `{ ...error }` leaves it out.
        enumerable: false,
        writable: true,
        configurable: true,
      });
    return carrier;
  } catch {
    // A proxy that refuses: its own error is still the one to throw.
    return error;
  }
}

/** The most own properties an error (or object) may have to be copied; see {@link copyOf}. */
const MAX_COPIED_PROPERTIES = 1_024;

/**
 * For a native error, a native error (as `new Error()` makes: `util.types.isNativeError`,
 * cloned as an error) on `error`'s prototype with `error`'s own properties. Its class's
 * constructor is not run: the copy is what the original is, not a new error of that class.
 * An ordinary object that is no error is copied as an ordinary object; undefined for what
 * cannot be copied (a built-in or host object, see {@link hasInternalState}).
 */
function copyOf(error: object): object | undefined {
  // Told by brand checks, never by `Symbol.toStringTag`, which any object may declare (see
  // object-brands.ts, the coreerr30 review).
  const native = isNativeError(error);
  // A built-in or host object (an array, a Map, a Date, a Promise, a Response, a URL) keeps
  // its state in internal slots that nothing copies: a copy would be broken (its methods
  // throw, `JSON.stringify` of a Date's throws), so none is made and it is thrown as it is
  // (the corerev3 review). Told before the count below: the own keys of a typed array, a
  // `Buffer` or a `String` object are one an element (listing those of a 10 MB `Buffer` took
  // 36 s and 320 MB, the rev30a review).
  if (!native && hasInternalState(error)) return undefined;
  // Copying is linear in the own properties (descriptors, getters): an object of the app's
  // with more than a few is thrown as it is, so that a policy throwing a huge object does not
  // hold the caller for seconds (1e6 properties took about 15 s on a loaded 2-core machine).
  if (Reflect.ownKeys(error).length > MAX_COPIED_PROPERTIES) return undefined;
  const prototype: object | null = Object.getPrototypeOf(error);
  let copy: object;
  if (native) {
    const target = function Copy() {};
    target.prototype = prototype;
    copy = Reflect.construct(Error, [], target);
    // The copy's own stack, captured here, is formatted when it is first touched (replacing
    // it below does, on Node 20 and 22), by reading the copy's `name`: a getter that needs its
    // class's state (Node 20's `DOMException`, a class's `get name() { return this.#name }`)
    // threw on the copy, and the error was thrown without what it carries (the rev30a review).
    // Dropped unread: the original's own stack, if any, is put in its place.
    Reflect.deleteProperty(copy, 'stack');
  } else {
    // A plain object, or an instance of a class of the app's that is no error (whatever tag
    // it declares): copied as such (not made an error, no stack of its own).
    copy = Object.create(prototype);
  }
  const own = Object.getOwnPropertyDescriptors(error);
  // Newer V8 (Node 24) keeps an error's `stack` as an own accessor that reads the stack of the
  // object it is called on: copied as it is, it would read the copy's own. Its text is copied.
  const stack = own.stack;
  if (stack !== undefined && !('value' in stack))
    own.stack = {
      value: (error as { stack?: unknown }).stack,
      writable: true,
      enumerable: stack.enumerable === true,
      configurable: true,
    };
  Object.defineProperties(copy, own);
  keepGetters(error, copy);
  return copy;
}

/**
 * A getter of `error`'s class that reads the class's private state (`get detail() { return
 * this.#detail }`) throws on the copy, which the constructor never ran for: each such getter on
 * the prototype chain is answered on the copy by what it reads on `error` (the lastrev review).
 * Bounded: prototype chains are short; a getter that throws on `error` too is left as it is.
 */
function keepGetters(error: object, copy: object): void {
  let depth = 0;
  for (
    let proto: object | null = Object.getPrototypeOf(error);
    proto !== null && depth < 64;
    proto = Object.getPrototypeOf(proto), depth++
  ) {
    for (const key of Reflect.ownKeys(proto)) {
      if (Object.hasOwn(copy, key)) continue;
      const getter = Object.getOwnPropertyDescriptor(proto, key)?.get;
      if (getter === undefined) continue;
      try {
        Reflect.get(copy, key);
        continue;
      } catch {}
      try {
        Object.defineProperty(copy, key, {
          value: Reflect.get(error, key),
          writable: true,
          enumerable: false,
          configurable: true,
        });
      } catch {}
    }
  }
}

/**
 * Each engine's `begin` as it answers, by the `begin` method it was made with (see
 * {@link beginAtOnce}): an engine whose `begin` was replaced since (a tracing wrapper) is
 * called through its replacement, a copy of it (a spread) keeps the one it was made with.
 */
const beginsAtOnce = new WeakMap<
  object,
  (request: IdempotentRequest, options?: BeginOptions) => BeginResult | Promise<BeginResult>
>();

/**
 * `engine.begin` without its promise when the store answered at once (the memory store): the
 * result itself then, else the promise. Throws what `begin` rejects with. Each promise costs
 * more once promise hooks are on (an `AsyncLocalStorage` turns them on in Node 20; the
 * twenty-sixth pass in benchmarks/HISTORY.md).
 * @internal for @idem/http
 */
export function beginAtOnce(
  engine: Idempotency<unknown>,
  request: IdempotentRequest,
  options?: BeginOptions,
): BeginResult | Promise<BeginResult> {
  const begin = beginsAtOnce.get(engine.begin);
  return begin ? begin(request, options) : engine.begin(request, options);
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
  // Every execution's heartbeat waits here: one Node timer, not one an execution.
  const heartbeats =
    settings.heartbeatMs === false ? undefined : new FixedDelayTimers(settings.heartbeatMs);
  const begin = createBegin<T>({ settings, tasks, giveBacks, heartbeats, viewReplays, replay });

  async function execute(
    request: IdempotentRequest,
    operation: (ctx: OperationContext) => Promise<T>,
  ): Promise<ExecuteResult<T>> {
    // Checked before anything is acquired: a call that cannot run its operation must not take
    // the key (and release it) first.
    if (typeof operation !== 'function')
      throw new InvalidInputError('execute(request, operation): operation must be a function');
    const answer = begin(request, undefined, true);
    const begun = answer instanceof Promise ? await answer : answer;
    // A replay is answered as it is (the caller's `await` of this promise takes its turn).
    if (begun.kind === 'replayed') return { value: begun.value, replayed: true };
    if (begun.kind === 'replay') return { value: replay(begun.outcome), replayed: true };
    // Awaited also when the store answered at once: the operation always starts on a later
    // microtask, never inside the caller's call.
    if (!(answer instanceof Promise)) await undefined;
    const execution = begun.execution;
    // The event loop may have been held up since the acquisition was answered (a listener,
    // other callbacks before this one): past the runway the operation would start beside a
    // caller that takes the key over once the lease passes (the latrev review).
    if (execution.pastRunway()) {
      const late = await execution.refuseLateStart();
      if (late) throw late;
    }
    let settled: Settled<T>;
    const context = new ExecutionContext(execution);
    try {
      const value = await operation(context);
      settled = { ok: true, value };
    } catch (error) {
      settled = { ok: false, error };
    }
    let final: boolean;
    // The policy's own error, thrown once a success it failed to judge is recorded.
    let policyFailed: { error: unknown } | undefined;
    try {
      // A Promise (an async isFinal) is refused as a policy that throws: see outcomePolicyAnswer.
      const answer: unknown = context[DECIDED] ?? isFinal(settled);
      final = typeof answer === 'boolean' ? answer : outcomePolicyAnswer(answer);
    } catch (policyError) {
      // After a failure nothing ran to completion: release as usual. A success is recorded
      // as final whatever the policy's fault (the default policy keeps every success): left
      // to its lease, a retry after it ran the operation again (the conrev24 review). The
      // caller gets the policy's error, carrying the operation's.
      if (!settled.ok) {
        await execution.release().catch(() => {});
        throw withOperationError(policyError, settled.error);
      }
      policyFailed = { error: policyError };
      final = true;
    }
    if (!final) {
      // A failed release leaves the record in progress until its lease passes: reported
      // through events, while the caller gets what the operation did.
      await execution.release().catch(() => {});
      // A success the policy does not keep (a 5xx response value, say): the caller still
      // gets what the operation returned; a retry runs again.
      if (settled.ok) return { value: settled.value, replayed: false };
      throw settled.error;
    }
    let outcome: StoredOutcome | Uint8Array | string;
    try {
      if (!settled.ok) outcome = failureOutcome(settled.error);
      else if (viewReplays) outcome = execution.encodeJson(settled.value);
      else outcome = wrapValue(serializer.serialize(settled.value));
    } catch (cause) {
      // The operation ran; its value cannot be stored. A marker keeps retries from running it again.
      const marker = await execution.completeNotRecorded('not_serializable').then(
        () => undefined,
        (failure: unknown) => ({ failure }),
      );
      const notRecorded = new OutcomeNotRecordedError('not_serializable', { cause });
      // No marker answers a retry either: said to whoever settles something on it (markerFailureOf).
      if (marker) noteMarkerFailure(notRecorded, marker.failure);
      throw policyFailed ? withPolicyError(notRecorded, policyFailed.error, true) : notRecorded;
    }
    // Undefined when a store that answers at once recorded it already.
    const recording =
      typeof outcome === 'string'
        ? execution.completeLatin1(outcome)
        : outcome instanceof Uint8Array
          ? execution.completeEncoded(outcome)
          : execution.complete(outcome);
    if (recording !== undefined) {
      if (policyFailed === undefined) await recording;
      else {
        const { error: policyError } = policyFailed;
        await recording.catch((error: unknown) => {
          throw withPolicyError(error, policyError);
        });
      }
    }
    if (policyFailed) throw policyFailed.error;
    if (settled.ok) return { value: settled.value, replayed: false };
    throw settled.error;
  }

  function replay(outcome: StoredOutcome): T {
    const { kind } = outcome.meta;
    if (kind === 'failure') {
      const failure = outcome.meta.failure;
      if (typeof failure !== 'object' || failure === null)
        throw new OutcomeCorruptError('The recorded failure has no name and message');
      throw new ReplayedFailureError(failure as { name: string; message: string; code?: string });
    }
    // Only what `execute` (or an integration writing its form) recorded is a value: an
    // outcome `begin` recorded under the same scope and key (an HTTP response) is not, even
    // when its body parses.
    if (kind !== 'value')
      throw new OutcomeCorruptError(
        'The recorded outcome is not a value recorded by execute (recorded through begin under the same scope and key?); not replayed',
      );
    try {
      return serializer.deserialize({
        meta: (outcome.meta.value ?? {}) as StoredOutcome['meta'],
        body: outcome.body,
      });
    } catch (cause) {
      if (isIdemError(cause)) throw cause;
      throw new OutcomeCorruptError('The serializer could not read the recorded value', {
        cause,
      });
    }
  }

  const beginNow = (request: IdempotentRequest, beginOptions?: BeginOptions) =>
    begin(request, beginOptions) as BeginResult | Promise<BeginResult>;
  const engine: Idempotency<T> = {
    execute,
    begin: (request, beginOptions) => {
      try {
        const begun = beginNow(request, beginOptions);
        return begun instanceof Promise ? begun : Promise.resolve(begun);
      } catch (error) {
        return Promise.reject(error);
      }
    },
    drain: async (timeoutMs = settings.leaseMs, drainOptions?: DrainOptions) => {
      if (!(typeof timeoutMs === 'number' && Number.isFinite(timeoutMs) && timeoutMs >= 0))
        throw new InvalidInputError('drain(timeoutMs) needs a finite, non-negative number of ms');
      const finalWritesOnly = drainOptions?.finalWritesOnly;
      if (
        (drainOptions !== undefined &&
          (typeof drainOptions !== 'object' || drainOptions === null)) ||
        !(finalWritesOnly === undefined || typeof finalWritesOnly === 'boolean')
      )
        throw new InvalidInputError(
          'drain(timeoutMs, options): options is an object whose finalWritesOnly is a boolean',
        );
      return tasks.drain(timeoutMs, finalWritesOnly === true);
    },
    settings,
  };
  beginsAtOnce.set(engine.begin, beginNow);
  return engine;
}
