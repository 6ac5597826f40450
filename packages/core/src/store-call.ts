import { guardStoreCall, type StoreErrorRules, toStoreError } from './adapter-kit/store-errors.js';
import type { StoreOperation } from './events.js';
import type { CompleteInput, StoreCallContext, StoredRecord } from './store.js';

const ENGINE_RULES: StoreErrorRules = { service: 'Store' };

/**
 * Runs one store call with a time limit. Errors that are already `IdemError`s pass through;
 * anything else becomes a `StoreUnavailableError` with the original as `cause`. A call that
 * times out may still be applied by the store: every write is owner-checked, so a late
 * application cannot overwrite a newer owner, and a repeat of it is recognised (redelivery).
 *
 * One timer and one promise a call (this runs on every store call of every request).
 *
 */
export function callStore<T>(
  operation: StoreOperation,
  timeoutMs: number,
  fn: (call: StoreCallContext) => Promise<T>,
  options: StoreCallOptions = {},
): Promise<T> {
  const { observe } = options;
  if (observe === undefined) return timedCall(operation, timeoutMs, fn, options.unref === true);
  const startedAt = performance.now();
  const call = timedCall(operation, timeoutMs, fn, options.unref === true);
  const settled = (ok: boolean) => {
    try {
      observe(ok, performance.now() - startedAt);
    } catch {
      // An observer's bug must not become an unhandled rejection.
    }
  };
  call.then(
    () => settled(true),
    () => settled(false),
  );
  return call;
}

/** Options of {@link callStore}. */
export interface StoreCallOptions {
  /** The time limit does not keep the process alive (background work). */
  unref?: boolean;
  /**
   * Told once the call settled: whether it answered, and how long it took in ms (a timed-out
   * call: its time limit). For latency metrics; what it throws is ignored.
   */
  observe?: (ok: boolean, durationMs: number) => void;
}

function timedCall<T>(
  operation: StoreOperation,
  timeoutMs: number,
  fn: (call: StoreCallContext) => Promise<T>,
  unref: boolean,
): Promise<T> {
  // The call's signal, made only when the store reads it (most never do).
  let controller: AbortController | undefined;
  // The time limit's error once it passed: a signal first read after that (the call waited
  // in an admission queue, or the store reads it once it has a connection) is made aborted,
  // or it would never abort and the request it bounds would run on unwaited for.
  let timedOut: Error | undefined;
  const call: StoreCallContext = {
    get signal() {
      if (controller === undefined) {
        controller = new AbortController();
        if (timedOut !== undefined) controller.abort(timedOut);
      }
      return controller.signal;
    },
  };
  // Made only when the signal was read (a store that ignores it pays nothing).
  cutters.set(call, (reason) => controller?.abort(reason));
  return guardStoreCall(ENGINE_RULES, operation, () => fn(call), {
    timeoutMs,
    unref,
    onTimeout: (error) => {
      timedOut = error;
      controller?.abort(error);
    },
  });
}

/** How to abort each call context {@link callStore} made (see {@link cutStoreCall}). */
const cutters = new WeakMap<StoreCallContext, (reason: Error) => void>();

/**
 * Aborts the signal of a call context {@link callStore} made, with `reason`: for a caller that
 * stopped waiting for the call before its time limit (an acquire not answered within its
 * lease's runway), so that the store may cut the request then rather than at the time limit.
 * Does nothing for another object, or once the signal was aborted. @internal
 */
export function cutStoreCall(call: StoreCallContext, reason: Error): void {
  cutters.get(call)?.(reason);
}

/**
 * The property of a store method that holds its synchronous form (see
 * {@link answersSynchronously}). Read only on a method this copy of the package built (see
 * {@link syncFormOf}); a registered symbol, so a method's form can be replaced in place by
 * code that imports another copy.
 */
export const SYNC_FORM: unique symbol = Symbol.for('idem.store.syncForm') as never;

/**
 * What {@link answersSynchronously} was told for each method it built, by method (every
 * method it built has an entry). Kept here, not on the method: the `view` and `latin1` forms
 * keep the engine's own strings (its storage key and owner token) without a copy, so no one
 * but this module's engine may reach them. A property, even under a symbol that is not
 * registered, is listed by `Reflect.ownKeys` and could be called by anyone with a key or owner
 * cut from a large string that the store would then keep whole. The entry is also what makes
 * the method's own `SYNC_FORM` count: a wrapper that only passes property reads through (a
 * `Proxy` of the method, a function whose prototype is the method) is another object, with no
 * entry, so the engine calls it and not the form behind it (which would skip what the wrapper
 * does to the input, a tenant's key prefix). A second copy of this package has a map of its
 * own: its engine sees no form of these methods and calls them as promises.
 */
const declaredForms = new WeakMap<object, Declared<never, unknown>>();

// Read once, at load: a caller that later replaces `WeakMap.prototype.get` (or `set`, or
// `Function.prototype.call`) must not be handed `declaredForms`.
const uncurryThis = Function.prototype.bind.bind(Function.prototype.call) as <
  T,
  A extends unknown[],
  R,
>(
  method: (this: T, ...args: A) => R,
) => (self: T, ...args: A) => R;
const declaredGet = uncurryThis(WeakMap.prototype.get) as (
  map: WeakMap<object, Declared<never, unknown>>,
  key: object,
) => Declared<never, unknown> | undefined;
const declaredSet = uncurryThis(WeakMap.prototype.set) as (
  map: WeakMap<object, Declared<never, unknown>>,
  key: object,
  value: Declared<never, unknown>,
) => unknown;
const hasOwn = Object.hasOwn;

/** What {@link answersSynchronously} declared for `sync` (see {@link SyncFormOptions}). */
interface Declared<I, R> {
  readonly sync: (input: I) => R;
  readonly view: ((input: I) => R) | undefined;
  readonly latin1: ((input: I) => R) | undefined;
  readonly latin1Outcome: ((input: Latin1CompleteInput) => R) | undefined;
  readonly copiesInput: boolean;
}

/** A store method that may carry its synchronous form. */
type MaybeSync<I, R> = ((input: I) => Promise<R>) & {
  [SYNC_FORM]?: (input: I) => R;
};

/**
 * A store method built from `sync`, a function that does the whole call before it returns
 * (an in-process store): the method answers `sync(input)` as a promise (a throw becomes a
 * rejection), and carries `sync` so the engine can call it directly. A time limit bounds
 * waiting; a call that settles before it returns cannot wait, and a timer armed for it could
 * never fire first (a timer runs only after the call returned and its answer was taken), so
 * the engine calls the synchronous form without one. Only this very function carries it: a
 * wrapper that replaces the method (fault injection, an admission limit) has none, and its
 * calls are timed as usual.
 */
export function answersSynchronously<I, R>(
  sync: (input: I) => R,
  options: SyncFormOptions<I, R> = {},
): (input: I) => Promise<R> {
  const method: MaybeSync<I, R> = async (input: I) => sync(input);
  // Not enumerable: a wrapper made with `Object.assign(wrapper, method)` (or a spread) must
  // not carry them, or the engine would call this form straight past the wrapper.
  Object.defineProperty(method, SYNC_FORM, { value: sync, writable: true, configurable: true });
  declaredSet(declaredForms, method, {
    sync,
    view: options.view,
    latin1: options.latin1,
    latin1Outcome: options.latin1Outcome,
    copiesInput: options.copiesInput === true,
  } satisfies Declared<I, R> as Declared<never, unknown>);
  return method;
}

/**
 * What else a method built with {@link answersSynchronously} tells the engine, so that it
 * can skip a copy. Both are promises about memory only: the answers are the same.
 * @internal for in-process stores (`@idem/store-memory`)
 */
export interface SyncFormOptions<I, R> {
  /**
   * `sync` whose answer may hold outcome bytes (a found record's `outcome`) that are a view
   * of memory the store reuses: they are valid only until the next call into the store, and
   * MUST be answered synchronously. The engine calls it only when it is done with those
   * bytes before anything else can run (it decodes them at once, and copies what it hands
   * out); every other caller gets `sync`'s own bytes.
   */
  view?: (input: I) => R;
  /**
   * `sync` whose answer's found record may carry its outcome as a string of one character a
   * byte (`outcomeLatin1`, see {@link Latin1Record}) instead of bytes in `outcome`: a string
   * the store holds and never changes (strings cannot be changed), so nothing is copied. The
   * engine calls it only for `execute`'s replays under the built-in JSON serializer, which
   * parse the recorded JSON straight from it; every other caller gets `sync`'s own bytes.
   */
  latin1?: (input: I) => R;
  /**
   * For `complete`: `sync` with the outcome given as a string of one character a byte
   * (`outcomeLatin1`, see {@link Latin1CompleteInput}) instead of bytes: the same write, the
   * same answers and errors. The engine calls it only with a string it made (the encoding of
   * an ASCII JSON value, which no caller holds), so the store may keep it without a copy;
   * every other caller gives bytes to `sync`.
   */
  latin1Outcome?: (input: Latin1CompleteInput) => R;
  // The engine calls `view` and `latin1` (on `acquire`) only with an input it made: its `key`
  // (a digest) and `owner` (its token) are strings of its own that share no memory with any
  // caller's string, so those forms may keep them without a copy. (The fingerprint is the
  // caller's.)
  /**
   * `sync` keeps no reference to the input's bytes (an outcome) once it returned: it copies
   * what it keeps. The engine may then pass a view of a buffer it reuses.
   */
  copiesInput?: boolean;
}

/**
 * The synchronous form `method` carries (see {@link answersSynchronously}), if any: the
 * method's own `SYNC_FORM` (as it is now: a form replaced in place counts), and only on a
 * method this copy of the package built. Anything else, a `SYNC_FORM` it inherits or that a
 * `Proxy` passes through included, has none: the engine calls the method itself.
 */
export function syncFormOf<I, R>(method: (input: I) => Promise<R>): ((input: I) => R) | undefined {
  if (typeof method !== 'function' || declaredGet(declaredForms, method) === undefined)
    return undefined;
  return hasOwn(method, SYNC_FORM) ? (method as MaybeSync<I, R>)[SYNC_FORM] : undefined;
}

/**
 * What `method` declared for its synchronous form, while its own `SYNC_FORM` is still that
 * very form: a wrapper that replaced the method, or only its `SYNC_FORM` (in place), made no
 * such promise.
 */
function declaredOf<I, R>(method: (input: I) => Promise<R>): Declared<I, R> | undefined {
  if (typeof method !== 'function') return undefined;
  const declared = declaredGet(declaredForms, method) as Declared<I, R> | undefined;
  return declared !== undefined &&
    hasOwn(method, SYNC_FORM) &&
    (method as MaybeSync<I, R>)[SYNC_FORM] === declared.sync
    ? declared
    : undefined;
}

/** The view form `method` carries (see {@link SyncFormOptions.view}), if any. @internal */
export function viewFormOf<I, R>(method: (input: I) => Promise<R>): ((input: I) => R) | undefined {
  return declaredOf(method)?.view;
}

/** The Latin-1 form `method` carries (see {@link SyncFormOptions.latin1}), if any. @internal */
export function latin1FormOf<I, R>(
  method: (input: I) => Promise<R>,
): ((input: I) => R) | undefined {
  return declaredOf(method)?.latin1;
}

/**
 * The input of a {@link SyncFormOptions.latin1Outcome} form: a `complete` whose outcome is a
 * string of one character a byte (the encoded outcome's bytes, every one below 0x80), with
 * `outcome` absent. @internal
 */
export interface Latin1CompleteInput extends Omit<CompleteInput, 'outcome'> {
  outcomeLatin1: string;
}

/** The Latin-1 outcome form `method` carries (see {@link SyncFormOptions.latin1Outcome}), if any. @internal */
export function latin1OutcomeFormOf<R>(
  method: (input: never) => Promise<R>,
): ((input: Latin1CompleteInput) => R) | undefined {
  return (declaredOf(method as (input: unknown) => Promise<R>) as Declared<unknown, R> | undefined)
    ?.latin1Outcome;
}

/**
 * A found record as a {@link SyncFormOptions.latin1} form may answer it: a completed
 * record's outcome as a string of one character a byte (the encoded outcome's bytes), with
 * `outcome` absent. @internal
 */
export interface Latin1Record extends StoredRecord {
  outcomeLatin1?: string;
}

/** Whether `method`'s synchronous form copies its input (see {@link SyncFormOptions.copiesInput}). @internal */
export function copiesInputOf(method: (input: never) => Promise<unknown>): boolean {
  return declaredOf(method)?.copiesInput === true;
}

/**
 * {@link callStore} for a synchronous form: its answer, or its error as the typed error
 * `callStore` would reject with (an `IdemError` as it is, anything else a
 * `StoreUnavailableError`); `observe` is told as `callStore` tells it. A form that answers a
 * promise after all (an async function given to {@link answersSynchronously}, which its type
 * allows) did not answer at once: its promise is awaited as {@link callStore} awaits one, under
 * `timeoutMs`, and returned.
 */
export function callStoreSync<I, R>(
  operation: StoreOperation,
  sync: (input: I) => R,
  input: I,
  observe: ((ok: boolean, durationMs: number) => void) | undefined,
  timeoutMs: number,
  unref = false,
): R | Promise<Awaited<R>> {
  const startedAt = observe === undefined ? 0 : performance.now();
  let ok = false;
  let answer: R;
  try {
    answer = sync(input);
    ok = true;
  } catch (error) {
    throw toStoreError(ENGINE_RULES, operation, error);
  } finally {
    if (observe !== undefined && !(ok && isThenable(answer!))) {
      try {
        observe(ok, performance.now() - startedAt);
      } catch {
        // An observer's bug must not change the call's answer.
      }
    }
  }
  if (isThenable(answer)) {
    const pending = Promise.resolve(answer as PromiseLike<Awaited<R>>);
    const timed = callStore<Awaited<R>>(operation, timeoutMs, () => pending, { observe, unref });
    // The store's own promise, for whoever must wait for the call itself to settle (a
    // give-back sent when the time limit passed could land before the call it gives back).
    (timed as Pending<Awaited<R>>)[PENDING] = pending;
    return timed;
  }
  return answer;
}

const PENDING = Symbol('pending');
type Pending<R> = Promise<R> & { [PENDING]?: Promise<R> };

/**
 * The store's own promise behind a timed one {@link callStoreSync} gave for a synchronous
 * form that answered a promise after all (settles when the store does, not at the time
 * limit); otherwise `timed` itself.
 */
export function pendingOf<R>(timed: Promise<R>): Promise<R> {
  return (timed as Pending<R>)[PENDING] ?? timed;
}

/**
 * Whether `value` is a thenable (an object or function with a `then` method), as `await`
 * takes it. Shared by the packages that await what user code returns. @internal
 */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}
