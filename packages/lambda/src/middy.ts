import {
  type Execution,
  InvalidInputError,
  isThenable,
  jsonSerializer,
  OutcomeNotRecordedError,
  ReplayedFailureError,
  type StoredOutcome,
} from '@idem/core';
import {
  checkFunction,
  checkOptionsObject,
  checkScopeGiven,
  engineForInvocation,
  type LambdaContextLike,
  requestFor,
  validateEngineOptions,
} from './lambda-engine.js';
import type { IdempotencyInfo, MakeIdempotentOptions } from './make-idempotent.js';

/** The part of a Middy request the middleware uses (structurally Middy's `Request`). */
export interface MiddyRequestLike<TEvent, TResult, TContext> {
  event: TEvent;
  context: TContext;
  response: TResult | undefined | null;
  error?: unknown;
  internal: Record<string, unknown>;
  /** Set (Middy 6) to end the chain early, even with `undefined`. */
  earlyResponse?: TResult | undefined | null;
}

/** A Middy middleware object (`before`, `after`, `onError`). */
export interface IdempotencyMiddleware<TEvent, TResult, TContext> {
  before: (request: MiddyRequestLike<TEvent, TResult, TContext>) => Promise<TResult | undefined>;
  after: (request: MiddyRequestLike<TEvent, TResult, TContext>) => Promise<void>;
  onError: (request: MiddyRequestLike<TEvent, TResult, TContext>) => Promise<void>;
  /**
   * The companion to use LAST in `.use()`: Middy runs its `before` last (a later `before`
   * writing a default `request.response` is then not taken for the handler's return), its
   * `after` first once the handler has returned, and its `onError` first when an error is
   * caught, which waits for the decision's store write (release or not-recorded marker) before
   * any later `onError` can end the invocation (a rethrow, `earlyResponse = undefined`).
   */
  last: IdempotencyLastMiddleware<TEvent, TResult, TContext>;
}

/** The companion of {@link idempotency} to use last in `.use()` (see `last`). */
export interface IdempotencyLastMiddleware<TEvent, TResult, TContext> {
  /** Runs last in the `before` chain: a write of `request.response` before it is no return. */
  before: (request: MiddyRequestLike<TEvent, TResult, TContext>) => Promise<undefined>;
  after: (request: MiddyRequestLike<TEvent, TResult, TContext>) => Promise<void>;
  onError: (request: MiddyRequestLike<TEvent, TResult, TContext>) => Promise<void>;
}

/** Options of {@link idempotency}: those of `makeIdempotent` without a custom serializer or policy. */
export type MiddyIdempotencyOptions<TEvent, TResult, TContext extends LambdaContextLike> = Omit<
  MakeIdempotentOptions<TEvent, TResult, TContext>,
  'serializer' | 'isFinal'
>;

/** The handler's view of the execution: `context.idempotency` while it runs. */
export type ContextWithIdempotency<TContext> = TContext & { idempotency?: IdempotencyInfo };

/**
 * The Middy middleware: `middy(handler).use(idempotency({ store, key, scope }))`.
 *
 * `before` acquires the key: a recorded response is returned at once (the handler does not
 * run), a duplicate in progress throws `InProgressError`; otherwise the handler runs with
 * `context.idempotency` (fence, signal, storageKey) and `after` records its response
 * (owner-checked) before Middy returns it. When the handler throws, the key is released (at
 * Middy's catch, known by the call site of its write, else in `onError`) so a retry runs
 * again (successes only are recorded; the JSON serializer is used); once the
 * handler has returned, the key is never released: an error in a later `after` leaves a
 * not-recorded marker, an early answer from a later `after` is recorded. Put it first in
 * `.use()` so that the response it records is the one the later middlewares' `after` produced,
 * and its `last` companion last (`.use(idem.last)`) so that no later `onError` ends the
 * invocation before the decision's write has landed.
 */
export function idempotency<TEvent, TResult, TContext extends LambdaContextLike>(
  options: MiddyIdempotencyOptions<TEvent, TResult, TContext>,
): IdempotencyMiddleware<TEvent, TResult, TContext> {
  checkOptionsObject(options);
  const { key, payload, scope, ...engineOptions } = options;
  checkFunction('key', key);
  checkFunction('payload', payload, true);
  checkScopeGiven('idempotency()', scope);
  validateEngineOptions(engineOptions);
  // The invocation of each request between `before` and its end, by request object, for this
  // middleware alone (`request.internal` is shared by every middleware, and by every
  // invocation when the plugin sets one).
  const invocations = new WeakMap<object, Invocation>();
  return {
    async before(request) {
      // (First, while Middy's own functions are the callers of this hook: see `middyFrames`.)
      const frames = noteMiddyFrames();
      // (An outer idempotency() watching these reads must not take them for Middy's call of
      // the handler, a read of `event` right followed by one of `context`: the read of
      // `request.error` between them, which it watches too, breaks that pair.)
      const event = request.event;
      void request.error;
      const context = request.context;
      invocations.delete(request); // (a request object used again: its last invocation is over)
      checkWatchable(request); // (before the key is acquired: a refusal holds nothing)
      const req = requestFor(event, context, key(event, context), payload?.(event, context), scope);
      const begun = await engineForInvocation(engineOptions, context).begin(req);
      if (begun.kind === 'replay') {
        const value = replayed<TResult>(begun.outcome);
        // Middy 6 ends the chain (no handler, no `after`) when `request.earlyResponse` is an own
        // property, whatever its value; a returned value alone would not end it for `undefined`
        // (the usual return of an SQS / SNS / EventBridge handler), which would run again.
        // (Before `response`: an outer `idempotency()` sees an early answer, not a handler's.)
        request.earlyResponse = value;
        request.response = value;
        return value;
      }
      const { execution } = begun;
      const invocation: Invocation = {
        execution,
        returned: false,
        timedOut: false,
        pending: undefined,
        ambiguous: false,
        ambiguousRun: false,
        maybeCaught: false,
        failed: false,
        decision: undefined,
        settled: false,
        answerWaits: false,
        copyOpen: false,
        copyTurn: 0,
        copyFresh: false,
        read: undefined,
        lastRead: undefined,
        called: false,
        callGetters: undefined,
        preCallPair: false,
        frames,
      };
      invocations.set(request, invocation);
      watchRequest(invocations, request, invocation);
      (context as ContextWithIdempotency<TContext>).idempotency = {
        fence: execution.fence,
        get signal() {
          return execution.signal;
        },
        storageKey: execution.storageKey,
        get originId() {
          return execution.originId;
        },
      };
      return undefined;
    },
    async after(request) {
      const invocation = invocations.get(request);
      if (!invocation || invocation.decision) return;
      const { execution } = invocation;
      if (invocation.timedOut) {
        // Middy's early timeout answered: the handler may still be running, as for a throw.
        decideOnError(invocation, false);
        await invocation.decision;
        return;
      }
      // The `after` chain runs once the handler has returned (Middy runs it after no catch).
      markReturned(invocation);
      let value: unknown = request.response;
      if (isThenable(value)) {
        // A later `after` stored a promise: Middy answers with its settled value.
        try {
          value = await value;
        } catch {
          // The caller gets the rejection; the handler ran: a retry must not run it again.
          decide(invocation, execution.completeNotRecorded('not_serializable'), true);
          await invocation.decision;
          return;
        }
        if (invocation.decision) return; // decided meanwhile (an unusual hook ended the chain)
      }
      let outcome: StoredOutcome;
      try {
        outcome = outcomeOf(value);
      } catch (cause) {
        // The handler ran: a marker keeps a retry from running it again.
        decide(invocation, execution.completeNotRecorded('not_serializable'), true);
        await invocation.decision;
        throw new OutcomeNotRecordedError('not_serializable', { cause });
      }
      decide(invocation, execution.complete(outcome), false);
      await invocation.decision;
    },
    async onError(request) {
      const invocation = invocations.get(request);
      if (!invocation) return;
      // Made when Middy set `request.error` (see `watchRequest`), unless that was not seen.
      if (!invocation.decision) decideAtCatch(invocation);
      await invocation.decision?.catch(() => {});
    },
    last: {
      async before(request) {
        const invocation = invocations.get(request);
        if (!invocation || invocation.decision || invocation.failed) return undefined;
        // The end of the `before` chain: the writes of `request.response` so far were the
        // `before` hooks' (a default response), not the handler's return.
        invocation.pending = undefined;
        invocation.ambiguous = false;
        invocation.maybeCaught = false;
        invocation.returned = false;
        invocation.preCallPair = false; // (the chain went on: not Middy's catch)
        return undefined;
      },
      async after(request) {
        const invocation = invocations.get(request);
        if (!invocation || invocation.failed || invocation.timedOut) return;
        markReturned(invocation);
      },
      async onError(request) {
        const invocation = invocations.get(request);
        if (!invocation) return;
        if (!invocation.decision) decideAtCatch(invocation);
        await invocation.decision?.catch(() => {});
      },
    },
  };
}

/** What one `idempotency()` knows of one invocation it acquired the key for. */
interface Invocation {
  execution: Execution;
  /**
   * The handler has returned (or something that looks like it: see `watchRequest`). Once
   * true it stays true: no later write, deletion or redefinition undoes it.
   */
  returned: boolean;
  /** Middy wrote a `timeoutEarlyResponse` made by {@link idempotentTimeoutResponse}. */
  timedOut: boolean;
  /**
   * Writes of `request.response` in the current synchronous run (the last one's value, and
   * whether the handler may have been called then: before that, no write is a return).
   */
  pending: { count: number; lastUndefined: boolean; called: boolean } | undefined;
  /**
   * (Only where the writer of `request.error` is not known: see {@link writerOf}.)
   * A lone write of `undefined` to `request.response`, then a write of `request.error`, in one
   * synchronous run, before the handler was known to have returned: Middy's catch (the handler
   * or a `before` threw), or the handler's `undefined` and the first `after` hook writing
   * `request.error` itself. Writes alone cannot tell; the next hook of this middleware does
   * (its `after`: it returned; an `onError`: Middy caught), or Middy's read of the answer.
   * Never a release while it holds (see `watchRequest`).
   */
  ambiguous: boolean;
  /**
   * The ambiguous pair was written in the current synchronous run (cleared at its end). Middy's
   * catch always follows an `await` (of the handler, or of the hook that threw), so a second
   * catch-like pair in that run is never Middy's catch: it is the first `onError` hook's own
   * writes (after Middy's catch), or the first `after` hook's (after the handler's
   * `undefined`). It leaves the pair ambiguous, for the next sign to settle.
   */
  ambiguousRun: boolean;
  /** After the handler returned: `response = undefined; error = undefined` (a catch of `undefined`?). */
  maybeCaught: boolean;
  /** Middy caught an error: it runs the `onError` chain. */
  failed: boolean;
  /** The one decision (record, not-recorded marker or release) once made: its store write. */
  decision: Promise<void> | undefined;
  /** The decision's write has settled. */
  settled: boolean;
  /** Middy copied an early answer to `request.response`: its answer waits for the decision. */
  answerWaits: boolean;
  /** The synchronous run of that copy is still going (the hook that wrote it reads values). */
  copyOpen: boolean;
  /** Copies so far (to know the last one). */
  copyTurn: number;
  /**
   * No turn of the event loop has passed since the last copy: Middy reads its copy to return
   * it in the microtasks that follow it; a read after an `await` on a timer or I/O is a hook's.
   */
  copyFresh: boolean;
  /** The answer handed to the first read of an early answer (one promise for every read). */
  read: FinalRead | undefined;
  /**
   * The last access to the request this invocation watched: a read of `request.event` in the
   * current synchronous run? (Cleared at the end of that run: Middy's call reads both in one.)
   */
  lastRead: 'event' | undefined;
  /**
   * The handler may have been called: a read of `request.event` then of `request.context`
   * with no other watched access between (Middy's `lambdaHandler(request.event,
   * request.context, ...)`, or a hook reading both alike), or the watch of those reads is
   * gone. Until then a write of `request.response` is a `before` hook's, never the handler's
   * return (see `watchRequest`).
   */
  called: boolean;
  /** This invocation's getters of `request.event` and `request.context` (see `mayHaveCalled`). */
  callGetters: { event: object; context: object } | undefined;
  /**
   * A catch-like pair before the handler was called: Middy's catch of a `before` hook (or a
   * hook's own writes). Nothing ran: it decides nothing, never taken for a return.
   */
  preCallPair: boolean;
  /**
   * Where Middy's functions are (see {@link middyFrames}): to tell its writes from a hook's.
   * Noted at `before` without formatting (see {@link noteMiddyFrames}), read at the first need.
   */
  frames: LazyFrames;
}

/** The first read of an early answer after its copy (Middy's, to return it, or another reader's). */
interface FinalRead {
  value: unknown;
  promise: Promise<unknown>;
  /** The value itself goes to every read (an ambiguous pair ended by an early `undefined`). */
  raw: boolean;
}

/**
 * The pending writes of `request.response` were not Middy's reset: the handler returned
 * (unless ambiguous: then they are a hook's writes, which tell nothing).
 */
function settle(invocation: Invocation): void {
  const { pending } = invocation;
  if (!pending) return;
  invocation.pending = undefined;
  if (!invocation.ambiguous && pending.called) setReturned(invocation);
}

function setReturned(invocation: Invocation): void {
  invocation.returned = true;
}

/** A hook of this middleware in the `after` chain runs: Middy caught nothing, the handler returned. */
function markReturned(invocation: Invocation): void {
  settle(invocation);
  invocation.ambiguous = false;
  invocation.maybeCaught = false;
  setReturned(invocation);
}

/** Makes the invocation's one decision; `swallow` for the writes whose failure is not the caller's. */
function decide(invocation: Invocation, write: Promise<void>, swallow: boolean): void {
  const decision = swallow ? write.catch(() => {}) : write;
  invocation.decision = decision;
  decision.then(
    () => {
      invocation.settled = true;
    },
    () => {
      invocation.settled = true;
    },
  );
}

/**
 * The decision once an `onError` hook (of `idempotency()` or `idem.last`) runs, or Middy's
 * answer comes from the `onError` chain: Middy caught an error. An ambiguous write pair
 * before it was that catch (the handler did not return).
 */
function decideAtCatch(invocation: Invocation): void {
  settle(invocation);
  invocation.ambiguous = false;
  invocation.failed = true;
  decideOnError(invocation, invocation.returned);
}

/**
 * Middy itself wrote `request.error` (see {@link writerOf}): its catch (`request.response =
 * undefined; request.error = e` in one synchronous step) or its rethrow once an `onError` threw
 * (`e.originalError = request.error; request.error = e`). Either way Middy caught an error: the
 * decision is made now (released if the handler has not returned, else a not-recorded marker),
 * before any later `onError` can end the invocation. Middy's reset of `request.response` just
 * before is no return; an ambiguous pair before a catch was a hook's (Middy catches once).
 */
function decideAtMiddyWrite(invocation: Invocation, value: unknown, previous: unknown): void {
  const { pending } = invocation;
  const reset = pending?.lastUndefined === true;
  if (pending && reset) {
    invocation.pending = undefined;
    // (Another write before the reset in its step is not Middy's: taken as a return, the safe side.)
    if (pending.count >= 2 && pending.called) setReturned(invocation);
  }
  const rethrow =
    !reset &&
    isObjectLike(value) &&
    Object.hasOwn(value, 'originalError') &&
    (value as { originalError?: unknown }).originalError === previous;
  if (invocation.ambiguous && !rethrow) setReturned(invocation);
  invocation.ambiguous = false;
  invocation.maybeCaught = false;
  decideAtCatch(invocation);
}

/**
 * The decision once Middy runs the `onError` chain: the handler threw (or a `before` did, or
 * the handler timed out): the key is released so a retry runs again. The handler returned and
 * a later `after` threw (a response validator): it ran, so a not-recorded marker keeps a retry
 * from running it again (the retry gets `OutcomeNotRecordedError`).
 */
function decideOnError(invocation: Invocation, handlerReturned: boolean): void {
  const { execution } = invocation;
  const write = execution.finished
    ? Promise.resolve()
    : handlerReturned
      ? execution.completeNotRecorded('not_serializable')
      : execution.release();
  // A failed release: the lease runs out instead (heartbeats already stopped).
  decide(invocation, write, true);
}

/**
 * The decision when a chain ended early (Middy copied `request.earlyResponse` to
 * `request.response`), made at the first read of that answer after the copy (Middy's, to
 * return it, or any other reader's: the number of reads tells nothing). Once a catch is known
 * (see {@link decideAtCatch}): made there already. Otherwise, before the handler (nothing
 * returned): nothing ran, the key is released. After the handler returned, or an ambiguous
 * pair (taken as the handler's return: only an `onError` hook of `idempotency()` or
 * `idem.last` proves a catch): the key is never released; the answer, what the caller gets,
 * is recorded and replayed.
 */
function decideEarly(invocation: Invocation, value: unknown): void {
  if (invocation.failed) {
    decideAtCatch(invocation);
    return;
  }
  settle(invocation);
  if (invocation.ambiguous) markReturned(invocation);
  const { execution } = invocation;
  if (!invocation.returned || execution.finished)
    decide(invocation, execution.finished ? Promise.resolve() : execution.release(), true);
  else recordEarly(invocation, value);
}

/** Setters of `request.response` installed by any `idempotency()`, to know the watch is on. */
const responseWatches = new WeakSet<object>();

/**
 * Watches the request the key was acquired for, to make the one decision of the invocation
 * whichever way Middy ends it, and to know whether the handler has returned (Middy tells no
 * middleware; a middleware after this one may end the chain where no hook of this one runs):
 *
 * - `request.response`: Middy writes the handler's result there before the `after` chain (even
 *   `undefined`), and, when it catches an error, resets it to `undefined` and sets
 *   `request.error` in the same synchronous run. A write not followed in its run by such an
 *   error is the handler's return (or a later `before`'s write, taken as one): `returned`
 *   then holds for the rest of the invocation.
 * - `request.error`: who wrote it, told by the writer's call site (see {@link writerOf}):
 *   Middy's own write (its catch or its rethrow) decides at once (released, or a marker once
 *   the handler returned); a hook's changes nothing. Where the writer is not known (no call
 *   sites, a frame between), the writes alone decide, as follows. A write right after a write
 *   of `undefined` to `request.response` may be Middy's catch. After the handler returned (or
 *   after two writes of `request.response` in that run) it is taken as one: a value, and the
 *   decision (a not-recorded marker) is made then. Before, it is ambiguous: the handler may
 *   have returned `undefined`, then the first `after` hook (which Middy calls in that run)
 *   written `request.error`. Then no decision is made at the write: the next hook of this
 *   middleware settles it (its `after`: the handler returned; its or `idem.last`'s
 *   `onError`: Middy caught, the key is released), or Middy's read of an early answer (taken
 *   as the handler's return: recorded). Middy's own write when a later `onError` throws
 *   (`e.originalError = request.error`) settles nothing (an `after` hook's error normalizer
 *   writes alike). A second such pair in the run of the ambiguous one
 *   is a hook's (Middy's catch follows an `await`): it leaves the question open. Any other
 *   write (a middleware clearing or noting an error) changes nothing. When the watch of
 *   `request.response` is gone (deleted or redefined), a value written while
 *   `request.response` is `undefined` is taken the same way.
 * - an early answer: Middy 6 ends a chain when `request.earlyResponse` is an own property
 *   (however it got there), and copies it to `request.response`; a write of `request.response`
 *   while `request.earlyResponse` is own is that copy. The decision is made when the answer is
 *   read after the copy's synchronous run (Middy's `return request.response`), on the value
 *   read, what the caller gets (see {@link decideEarly}). In the `onError` chain Middy reads it
 *   twice in one synchronous run (`typeof request.response`, then `return`), elsewhere once:
 *   the first read hands out a promise, and the decision waits for the end of that run. A
 *   read once a turn of the event loop has passed since the last copy is a hook's (it
 *   answered early, then awaited a timer or I/O): it gets the value, and Middy copies again.
 *
 * Lambda freezes the environment once the handler has answered: a write still in flight then
 * would not land. Middy returns `request.response` from an async function; after the copy's
 * run, while the decision's write is in flight, reading `request.response` gives a promise of
 * the value, so the invocation answers once the write has landed; then it gives the value
 * again (what `requestEnd` sees). In the `onError` chain, where Middy rethrows when
 * `request.response` is `undefined` (an `onError` set `earlyResponse = undefined`), that
 * promise rejects with `request.error` once the write has landed: Middy returns it, the caller
 * gets the same error. A later `onError` that throws ends the invocation with no read: only
 * `idem.last` (its `onError` runs first) can wait then.
 */
function watchRequest(
  invocations: WeakMap<object, Invocation>,
  request: object,
  invocation: Invocation,
): void {
  const current = (target: object) => invocations.get(target) === invocation;
  watchCall(request, invocation, current);
  const response = chainedProperty(request, 'response');
  const setResponse = function (this: object, value: unknown) {
    response.set(this, value);
    if (!current(this)) return;
    invocation.lastRead = undefined;
    if (Object.hasOwn(this, 'earlyResponse')) {
      // Middy's copy of an early answer (or a hook's own write after answering early).
      settle(invocation);
      invocation.answerWaits = true;
      invocation.copyOpen = true;
      queueMicrotask(() => {
        invocation.copyOpen = false;
      });
      invocation.copyTurn += 1;
      invocation.copyFresh = true;
      const turn = invocation.copyTurn;
      setImmediate(() => {
        if (invocation.copyTurn === turn) invocation.copyFresh = false;
      }).unref?.();
      return;
    }
    if (invocation.failed || invocation.decision) return;
    // Before Middy called the handler: a `before` hook's write (a default response), not a
    // return (it is still counted: Middy's catch of a `before` writes a pair too).
    const called = mayHaveCalled(this, invocation);
    if (
      called &&
      !invocation.returned &&
      !invocation.ambiguous &&
      !invocation.pending &&
      takeTimeoutAnswer(this, value)
    ) {
      // Middy's early timeout won the race with the handler: not the handler's return.
      invocation.timedOut = true;
      return;
    }
    if (!invocation.pending) {
      invocation.pending = { count: 0, lastUndefined: false, called };
      queueMicrotask(() => settle(invocation));
    }
    invocation.pending.count += 1;
    invocation.pending.lastUndefined = value === undefined;
    invocation.pending.called = called;
  };
  responseWatches.add(setResponse);
  Object.defineProperty(request, 'response', {
    configurable: true,
    enumerable: true,
    get(this: object) {
      // (The getter in place before, called with no frame between: see `readByHookCaller`.)
      const value = response.getter ? response.getter.call(this) : response.get(this);
      if (!current(this)) return value;
      invocation.lastRead = undefined;
      if (!invocation.answerWaits) return value;
      // (In the copy's run: the hook that answered early reads its own answer, or Middy 7.7+,
      // which copies and returns from the function that calls the hooks, in one run.)
      if (invocation.copyOpen && !readByHookCaller(invocation.frames.get())) return value;
      // (A hook that answered early and reads after an `await`: Middy copies again after it.)
      if (!invocation.copyFresh) return value;
      return finalAnswer(invocation, this, value);
    },
    set: setResponse,
  });
  const error = chainedProperty(request, 'error');
  Object.defineProperty(request, 'error', {
    configurable: true,
    enumerable: true,
    get(this: object) {
      if (current(this)) invocation.lastRead = undefined;
      return error.get(this);
    },
    set(this: object, value: unknown) {
      const previous = current(this) ? error.get(this) : undefined;
      // (The setter in place before, called with no frame between: see `writerOf`.)
      if (error.setter) error.setter.call(this, value);
      else error.set(this, value);
      if (!current(this)) return;
      invocation.lastRead = undefined;
      if (invocation.failed || invocation.decision) return;
      const writer = writerOf(invocation.frames.get());
      // A hook's own write (noting, clearing or normalizing an error): never Middy's catch.
      if (writer === 'hook') return;
      if (writer === 'middy' || (writer === 'caller' && invocation.pending?.lastUndefined)) {
        decideAtMiddyWrite(invocation, value, previous);
        return;
      }
      // Unknown writer (no call sites, or a frame between): told by the writes alone.
      const { pending } = invocation;
      const reset = pending?.lastUndefined === true;
      const unwatched =
        value !== undefined &&
        !pending &&
        !watched(this) &&
        Reflect.get(this, 'response', this) === undefined;
      if (!mayHaveCalled(this, invocation)) {
        // Before Middy called the handler nothing ran: a pair (Middy's catch of a `before`, or
        // a hook's writes) decides nothing; the next hook of this middleware releases, or an
        // early answer does (see `finalAnswer`).
        if (reset || unwatched) {
          invocation.pending = undefined;
          invocation.preCallPair = true;
        }
        return;
      }
      if (reset || unwatched) {
        invocation.pending = undefined;
        // A hook's second pair in the run of the ambiguous one (see `ambiguousRun`): the
        // ambiguous pair stays the question (a first `onError` normalizing the error, released
        // by the next `onError` of this middleware; an `after` hook's, recorded by its `after`).
        if (invocation.ambiguous && invocation.ambiguousRun) return;
        if (invocation.returned || invocation.ambiguous || (pending && pending.count >= 2)) {
          // Not the handler's lone return: Middy's catch (or a hook's pair, taken as one) once
          // the handler has returned, or a second such pair in a later run (Middy's catch of a
          // later hook's throw, once the handler returned `undefined` and the first `after`
          // wrote request.error: the safe side, the handler returned), or two writes of
          // `request.response` before the error (one of them was not Middy's reset).
          invocation.ambiguous = false;
          setReturned(invocation);
          if (value === undefined) {
            invocation.maybeCaught = true; // (a catch of `undefined`, or a hook clearing both)
            return;
          }
          invocation.failed = true;
          decideOnError(invocation, true);
          return;
        }
        // Middy's catch, or the handler's `undefined` then an `after` writing request.error.
        invocation.ambiguous = true;
        invocation.ambiguousRun = true;
        queueMicrotask(() => {
          invocation.ambiguousRun = false;
        });
        return;
      }
      if (
        invocation.maybeCaught &&
        isObjectLike(value) &&
        Object.hasOwn(value, 'originalError') &&
        (value as { originalError?: unknown }).originalError === previous
      ) {
        // Middy's catch of a throwing `onError` (`e.originalError = request.error; request.error
        // = e`) once the handler has returned: a not-recorded marker. (While the pair is
        // ambiguous the same write may be an `after` hook's error normalizer: it decides
        // nothing; `idempotency()`'s own `after` or `onError`, or `idem.last`, settle the pair,
        // else the key's lease lapses at the invocation's deadline.)
        decideAtCatch(invocation);
      }
    },
  });
}

/**
 * Getters of `request.event` / `request.context` installed by any `idempotency()`, each to the
 * getter it chains to (the one in place before it), if any.
 */
const callWatches = new WeakMap<object, object | undefined>();

/**
 * Watches the reads of `request.event` and `request.context` to know when Middy may have
 * called the handler: Middy 6 calls `lambdaHandler(request.event, request.context, ...)`, a
 * read of `event` right followed by one of `context`, after the `before` chain. Until such a
 * pair of reads, a write of `request.response` is a later `before` hook's (a default
 * response): never the handler's return. A hook reading both alike counts too (the safe side:
 * the writes after it are taken as before). A property that cannot be watched
 * (non-configurable), or a watch deleted or redefined later, counts as called.
 */
function watchCall(
  request: object,
  invocation: Invocation,
  current: (target: object) => boolean,
): void {
  for (const name of ['event', 'context'] as const) {
    const own = Object.getOwnPropertyDescriptor(request, name);
    if (own && !own.configurable) {
      invocation.called = true;
      return;
    }
  }
  const getters: Partial<Record<'event' | 'context', object>> = {};
  for (const name of ['event', 'context'] as const) {
    const chained = Object.getOwnPropertyDescriptor(request, name)?.get;
    const property = chainedProperty(request, name);
    const get = function (this: object) {
      // (Judged before the chained getter runs: what it reads must not hide Middy's pair.)
      if (name === 'context' && current(this) && invocation.lastRead === 'event')
        invocation.called = true;
      const value = property.get(this);
      if (current(this)) {
        invocation.lastRead = name === 'event' ? 'event' : undefined;
        // Middy reads both in one synchronous run: a read of `event` at the end of one hook
        // and of `context` in the next (http-json-body-parser, then
        // do-not-wait-for-empty-event-loop) is no call.
        if (name === 'event') queueMicrotask(() => clearEventRead(invocation));
      }
      return value;
    };
    callWatches.set(get, chained);
    getters[name] = get;
    Object.defineProperty(request, name, {
      configurable: true,
      enumerable: true,
      get,
      set(this: object, value: unknown) {
        property.set(this, value);
        if (current(this)) invocation.lastRead = undefined;
      },
    });
  }
  invocation.callGetters = getters as { event: object; context: object };
}

function clearEventRead(invocation: Invocation): void {
  invocation.lastRead = undefined;
}

/**
 * The handler may have been called (see {@link watchCall}); once the watch of the reads is
 * gone (deleted or redefined), it may have been, for the rest of the invocation. The watch is
 * this invocation's getter, or another `idempotency()`'s chaining to it (an inner one's): one
 * installed where this one was removed never tells it of Middy's reads.
 */
function mayHaveCalled(request: object, invocation: Invocation): boolean {
  if (invocation.called) return true;
  for (const name of ['event', 'context'] as const) {
    const own = invocation.callGetters?.[name];
    let getter = Object.getOwnPropertyDescriptor(request, name)?.get as object | undefined;
    // (Bounded: each getter chains to one installed before it.)
    for (let hops = 0; getter !== undefined && getter !== own && hops < 64; hops++)
      getter = callWatches.get(getter);
    if (own === undefined || getter !== own) {
      invocation.called = true;
      break;
    }
  }
  return invocation.called;
}

/**
 * A read of an early answer once its copy's run is over (Middy's `return request.response`,
 * or another reader's): a promise of the answer that settles once the decision's write has
 * landed (the same promise for every read of that value). It rejects (with `request.error`)
 * only where Middy alone would rethrow: a catch this middleware knows of (`failed`) and an
 * answer of `undefined`; never in the `before` chain, never for a value.
 */
function finalAnswer(invocation: Invocation, request: object, value: unknown): unknown {
  if (invocation.settled) return value;
  const read = invocation.read;
  if (read && Object.is(read.value, value)) return read.raw ? value : read.promise;
  const catchLike = invocation.ambiguous || (invocation.preCallPair && !invocation.returned);
  if (!invocation.decision && catchLike && value === undefined) {
    // An ambiguous pair ended by an early `undefined`: Middy returns it (the `after` chain) or
    // rethrows `request.error` (its `onError` chain), which no read tells apart. Taken as the
    // handler's return (recorded), the value goes to Middy as it is, so that the caller gets
    // what Middy alone gives; the record's write is then not awaited (`idem.last` settles the
    // pair before: see the README). The same for a pair before the handler was called (a
    // `before` threw, or a hook's writes in the `before` chain), except that it is released.
    decideEarly(invocation, value);
    invocation.read = { value, promise: Promise.resolve(value), raw: true };
    return value;
  }
  if (!invocation.decision) decideEarly(invocation, value);
  const caught = invocation.failed;
  const promise = (invocation.decision ?? Promise.resolve()).then(() => {
    // Middy rethrows `request.error` when the `onError` chain leaves `undefined`.
    if (caught && value === undefined) throw Reflect.get(request, 'error');
    return value;
  });
  promise.catch(() => {}); // (a read that is not returned is no unhandled rejection)
  invocation.read = { value, promise, raw: false };
  return promise;
}

/**
 * Where Middy's own functions are, seen from a hook of this middleware as Middy calls it: the
 * function that called the hook (Middy 6 to 7.6: `runMiddlewares`; 7.7 and later:
 * `runRequest`) and the one that called that (`runRequest`, which also calls the handler,
 * catches and rethrows; 7.7 and later: the execution mode's handler). Each is known by its
 * script and the position where it starts (V8 call sites, as in Node). `undefined` where call
 * sites are not available or tell no position: the writes alone decide then.
 */
interface MiddyFrames {
  hookCaller: string;
  runner: string;
}

/** {@link MiddyFrames} noted at `before`, formatted at the first `get()` (once). */
interface LazyFrames {
  get(): MiddyFrames | undefined;
}

/**
 * Notes the caller frames of `before` (called first thing in it) without formatting them: V8
 * captures the frames now and formats them (`Error.prepareStackTrace`, as found then) only
 * when the holder's `stack` is first read, which only an error or an early answer needs. A
 * successful invocation pays for the capture alone (a few µs), never for the call sites.
 */
function noteMiddyFrames(): LazyFrames {
  const holder = captureSites(noteMiddyFrames, MIDDY_FRAMES_LIMIT);
  let done = false;
  let frames: MiddyFrames | undefined;
  return {
    get() {
      if (!done) {
        done = true;
        frames = middyFrames(holder && formatSites(holder));
      }
      return frames;
    },
  };
}

/**
 * Frames noted at `before`: its own, its caller's, Node's frames between (none seen so far:
 * room for two), the next caller's.
 */
const MIDDY_FRAMES_LIMIT = 5;

/**
 * The caller frames of `before`, `sites` (first `before` itself). Middy calls the first hooks
 * in the step of its own call, later ones once `runMiddlewares` resumed after an `await`: its
 * caller is then an async frame, below Node's microtask runner (`node:` frames are never
 * Middy's).
 */
function middyFrames(sites: CallSiteLike[] | undefined): MiddyFrames | undefined {
  const own = siteId(sites?.[0]);
  const hookCaller = siteId(sites?.[1]);
  let at = 2;
  while (sites && at < sites.length && nodeInternal(sites[at])) at += 1;
  const runner = siteId(sites?.[at]);
  if (!own || !hookCaller || !runner) return undefined;
  if (own === hookCaller || own === runner || hookCaller === runner) return undefined;
  return { hookCaller, runner };
}

/**
 * A read of `request.response` in the run of Middy's copy of an early answer is Middy's own
 * when it comes from the function that calls the hooks: Middy 7.7 and later copy the answer
 * and return `request.response` from `runRequest`, which calls the hooks, in one synchronous
 * run (Middy 6 returns it from `runRequest` after `runMiddlewares` returned: after that run).
 * A hook that answered early and reads its answer again is not that function. (Only in the
 * copy's run, which is rare: an early answer.)
 */
function readByHookCaller(frames: MiddyFrames | undefined): boolean {
  if (!frames) return false;
  const sites = callSites(readByHookCaller, 6);
  const own = siteId(sites?.[0]);
  if (!sites || !own) return false;
  let at = 1;
  // (Another idempotency()'s getter chained to this one, a built-in relaying the read.)
  while (at < sites.length && (siteId(sites[at]) === own || builtIn(sites[at]))) at += 1;
  return siteId(sites[at]) === frames.hookCaller;
}

/**
 * Who wrote `request.error` (called first thing in its setter, whose frame is the first one):
 * `'middy'` when the first frame past this module's setters is Middy's `runRequest` itself
 * (its catch or its rethrow), `'hook'` when it is a function called, directly or not, by
 * Middy's caller of hooks (`runMiddlewares`: a hook's own write, even after an `await`: the
 * async frames show it), `'caller'` when it is that caller of hooks itself, called by the
 * function above it (Middy 7.7 and later, whose `runRequest` calls the hooks and catches),
 * else `undefined` (unknown: a frame of another watcher between, a plugin, no call sites).
 * Frames that end at the first limit before telling (a hook's write deep in helpers) are read
 * again, deeper.
 */
function writerOf(frames: MiddyFrames | undefined): WriterKind | undefined {
  if (!frames) return undefined;
  const writer = writerIn(frames, callSites(writerOf, WRITER_FRAMES_LIMIT), WRITER_FRAMES_LIMIT);
  if (writer !== 'truncated') return writer;
  // A write made deep in helpers (a hook's): its frames again, far enough to reach Middy's.
  const deep = WRITER_FRAMES_DEEP_LIMIT;
  const deeper = writerIn(frames, callSites(writerOf, deep), deep);
  return deeper === 'truncated' ? undefined : deeper;
}

/**
 * `'middy'`: Middy's `runRequest` (Middy 6 to 7.6), `'hook'`: a function under Middy's caller
 * of hooks, `'caller'`: the caller of hooks itself, called by `runRequest`'s caller (Middy 7.7
 * and later, whose `runRequest` calls the hooks).
 */
type WriterKind = 'middy' | 'hook' | 'caller';

/** Frames read at a write of `request.error`, then again where they did not reach Middy's. */
const WRITER_FRAMES_LIMIT = 12;
const WRITER_FRAMES_DEEP_LIMIT = 200;

/**
 * {@link writerOf} on `sites`; `'truncated'` when they end (at their limit) before telling.
 */
function writerIn(
  frames: MiddyFrames,
  sites: CallSiteLike[] | undefined,
  limit: number,
): WriterKind | 'truncated' | undefined {
  const own = siteId(sites?.[0]);
  if (!sites || !own) return undefined;
  const truncated = sites.length >= limit ? 'truncated' : undefined;
  let at = 1;
  // (Another idempotency()'s setter of the same module chained to this one, and a built-in
  // that relays the write: `Reflect.set`, `Object.assign`.)
  while (at < sites.length && (siteId(sites[at]) === own || builtIn(sites[at]))) at += 1;
  if (at >= sites.length) return truncated;
  const writer = siteId(sites[at]);
  if (writer === undefined) return undefined;
  if (writer === frames.hookCaller) {
    // Middy 7.7 and later call the hooks from `runRequest` itself, which also catches: its own
    // write, called by the function that called it (the setter of `request.error` takes it
    // for Middy's catch right after its reset of `request.response` only).
    let below = at + 1;
    while (below < sites.length && nodeInternal(sites[below])) below += 1;
    if (below >= sites.length) return truncated;
    return siteId(sites[below]) === frames.runner ? 'caller' : undefined;
  }
  if (writer === frames.runner) return 'middy';
  for (let below = at + 1; below < sites.length; below += 1) {
    const id = siteId(sites[below]);
    if (id === frames.hookCaller) return 'hook';
    if (id === frames.runner) return undefined;
  }
  return truncated;
}

/** The part of V8's `CallSite` used here. */
interface CallSiteLike {
  getFileName?(): unknown;
  getLineNumber?(): unknown;
  getEnclosingLineNumber?(): unknown;
  getEnclosingColumnNumber?(): unknown;
  isEval?(): unknown;
}

/** A frame of Node's own code (its microtask runner, its module loader). */
function nodeInternal(site: CallSiteLike | undefined): boolean {
  try {
    const file = site?.getFileName?.();
    return typeof file === 'string' && file.startsWith('node:');
  } catch {
    return false;
  }
}

/** A frame of a built-in function (no script, no line: `Reflect.set`, `Object.assign`). */
function builtIn(site: CallSiteLike | undefined): boolean {
  try {
    return (
      site !== undefined &&
      site.getFileName?.() == null &&
      site.getLineNumber?.() == null &&
      site.isEval?.() !== true
    );
  } catch {
    return false;
  }
}

/** A call site's function: its script and where the function starts in it. */
function siteId(site: CallSiteLike | undefined): string | undefined {
  if (!site) return undefined;
  try {
    const file = site.getFileName?.();
    const line = site.getEnclosingLineNumber?.();
    const column = site.getEnclosingColumnNumber?.();
    if (typeof file !== 'string' || typeof line !== 'number' || typeof column !== 'number')
      return undefined;
    return `${line}:${column}:${file}`;
  } catch {
    return undefined;
  }
}

/** `Error` as this module uses it (V8's stack trace API, as in Node). */
const V8Error = Error as unknown as {
  captureStackTrace?: (target: object, skip?: unknown) => void;
  prepareStackTrace?: unknown;
  stackTraceLimit?: unknown;
};

/**
 * The call sites (sync and async frames, at most `limit`) below `skip`'s caller, first that
 * caller; `undefined` without V8's `Error.captureStackTrace`. `Error.prepareStackTrace` and
 * `Error.stackTraceLimit` are put back as they were before this returns.
 */
function callSites(skip: (...args: never[]) => unknown, limit: number): CallSiteLike[] | undefined {
  const holder = captureSites(skip, limit);
  return holder && formatSites(holder);
}

/**
 * Captures the frames below `skip`'s caller (at most `limit`) into a holder whose `stack` is
 * formatted when first read (V8 formats lazily); `undefined` without V8's
 * `Error.captureStackTrace`. `Error.stackTraceLimit` is put back before this returns.
 */
function captureSites(
  skip: (...args: never[]) => unknown,
  limit: number,
): { stack?: unknown } | undefined {
  const E = V8Error;
  if (typeof E.captureStackTrace !== 'function') return undefined;
  const before = E.stackTraceLimit;
  const holder: { stack?: unknown } = {};
  try {
    E.stackTraceLimit = limit;
    E.captureStackTrace(holder, skip);
    return holder;
  } catch {
    return undefined;
  } finally {
    try {
      E.stackTraceLimit = before;
    } catch {
      // (a frozen Error: nothing was changed)
    }
  }
}

/**
 * The call sites of a holder of {@link captureSites}, read (once) with this module's
 * `Error.prepareStackTrace`, then the one in place before is put back.
 */
function formatSites(holder: { stack?: unknown }): CallSiteLike[] | undefined {
  const E = V8Error;
  const hadPrepare = Object.hasOwn(E, 'prepareStackTrace');
  const prepare = E.prepareStackTrace;
  try {
    E.prepareStackTrace = (_error: unknown, sites: unknown) => sites;
    const sites = holder.stack; // (formatted now, with this prepareStackTrace)
    return Array.isArray(sites) ? (sites as CallSiteLike[]) : undefined;
  } catch {
    return undefined;
  } finally {
    try {
      if (hadPrepare) E.prepareStackTrace = prepare;
      else delete E.prepareStackTrace;
    } catch {
      // (a frozen Error: nothing was changed)
    }
  }
}

function isObjectLike(value: unknown): value is object {
  return (typeof value === 'object' && value !== null) || typeof value === 'function';
}

/**
 * `InvalidInputError` unless the watch can be installed on `request` (a plugin that seals or
 * freezes the request at `requestStart` makes `response` and `error` non-configurable).
 */
function checkWatchable(request: object): void {
  if (!Object.isExtensible(request)) {
    // (A replay adds `request.earlyResponse`.)
    throw new InvalidInputError(
      'idempotency() cannot watch the Middy request: it is not extensible ' +
        '(seal it, if at all, in a middleware used after idempotency())',
    );
  }
  for (const name of ['response', 'error']) {
    const own = Object.getOwnPropertyDescriptor(request, name);
    if (own ? own.configurable : Object.isExtensible(request)) continue;
    throw new InvalidInputError(
      `idempotency() cannot watch request.${name}: the Middy request is sealed or frozen ` +
        '(seal it, if at all, in a middleware used after idempotency())',
    );
  }
}

/** The watch of `request.response` by an `idempotency()` is still in place. */
function watched(request: object): boolean {
  const setter = Object.getOwnPropertyDescriptor(request, 'response')?.set;
  return setter !== undefined && responseWatches.has(setter);
}

/**
 * Wraps Middy's `timeoutEarlyResponse` when it returns a value (a 504) instead of throwing:
 * `middy(handler, { timeoutEarlyResponse: idempotentTimeoutResponse(() => ({ statusCode: 504 })) })`.
 * `idempotency()` then knows that answer is Middy's early timeout, not the handler's return:
 * the key is released (the handler may still be running), as when the default throws. The
 * answer is known by identity: `response` must return a new object each time (or a promise of
 * one); anything else (`undefined`, `null`, a primitive, an object it returned before) is
 * refused with `InvalidInputError`, which Middy then rejects the invocation with (the key is
 * released, as for a throwing `timeoutEarlyResponse`).
 */
export function idempotentTimeoutResponse<T>(response: () => T): () => T {
  checkFunction('response', response);
  return () => {
    const value = response();
    if (isThenable(value)) {
      return Promise.resolve(value).then((settled) => {
        markTimeoutAnswer(settled);
        return settled;
      }) as T;
    }
    markTimeoutAnswer(value);
    return value;
  };
}

/** Answers made by {@link idempotentTimeoutResponse}, by identity. */
const timeoutAnswers = new WeakSet<object>();
/** The request each timeout answer was written to (taken by the first write of it). */
const timeoutTaken = new WeakSet<object>();
const timeoutAnswerOf = new WeakMap<object, object>();

function markTimeoutAnswer(value: unknown): void {
  if (!isObjectLike(value) || isThenable(value)) {
    throw new InvalidInputError(
      'idempotentTimeoutResponse(): the timeout answer must be a new object each time ' +
        `(got ${value === null ? 'null' : typeof value}); idempotency() knows it by identity`,
    );
  }
  if (timeoutAnswers.has(value)) {
    throw new InvalidInputError(
      'idempotentTimeoutResponse(): the timeout answer must be a new object each time ' +
        '(got one it returned before); idempotency() knows it by identity',
    );
  }
  timeoutAnswers.add(value);
}

/**
 * `value` is an answer of {@link idempotentTimeoutResponse} written to `request` by Middy: the
 * first request it is written to takes it (every `idempotency()` on that request sees it);
 * the handler of another request returning the same object is not timed out.
 */
function takeTimeoutAnswer(request: object, value: unknown): boolean {
  if (!isObjectLike(value) || !timeoutAnswers.has(value)) return false;
  if (timeoutTaken.has(value)) return timeoutAnswerOf.get(request) === value;
  timeoutTaken.add(value);
  timeoutAnswerOf.set(request, value);
  return true;
}

/** The handler returned, then a later hook answered early: its value is what is replayed. */
function recordEarly(invocation: Invocation, value: unknown): void {
  const { execution } = invocation;
  if (isThenable(value)) {
    // Middy answers with its settled value: that is what is recorded (a rejection: a marker).
    const write = Promise.resolve(value).then(
      (settled) => recordValue(execution, settled),
      () => execution.completeNotRecorded('not_serializable').catch(() => {}),
    );
    decide(invocation, write, false);
    return;
  }
  // A failed write fails the invocation (through Middy's answer), as in `after`.
  decide(invocation, recordValue(execution, value), false);
}

/** Records `value`; one the JSON serializer refuses leaves a not-recorded marker instead. */
function recordValue(execution: Execution, value: unknown): Promise<void> {
  let outcome: StoredOutcome;
  try {
    outcome = outcomeOf(value);
  } catch {
    // The caller gets the value; a retry gets `OutcomeNotRecordedError`, never a second run.
    return execution.completeNotRecorded('not_serializable').catch(() => {});
  }
  return execution.complete(outcome);
}

/**
 * Get and set of an own property as it was, a value or another middleware's accessor
 * (`setter`, `getter`: that accessor's own, to call with no frame of this module between).
 */
function chainedProperty(
  target: object,
  name: string,
): {
  get(self: object): unknown;
  set(self: object, value: unknown): void;
  setter?: (this: object, value: unknown) => void;
  getter?: (this: object) => unknown;
} {
  const before = Object.getOwnPropertyDescriptor(target, name);
  if (before?.get || before?.set) {
    return {
      get: (self) => before.get?.call(self),
      set: (self, value) => before.set?.call(self, value),
      setter: before.set,
      getter: before.get,
    };
  }
  let stored: unknown = before?.value;
  return {
    get: () => stored,
    set: (_self, value) => {
      stored = value;
    },
  };
}

/** The stored outcome of a response (the JSON serializer); throws what it throws. */
function outcomeOf(value: unknown): StoredOutcome {
  const serialized = jsonSerializer.serialize(value);
  return { meta: { kind: 'value', value: serialized.meta }, body: serialized.body };
}

/** The value a recorded outcome stands for, as `execute` would replay it. */
function replayed<T>(outcome: StoredOutcome): T {
  if (outcome.meta.kind === 'failure') {
    throw new ReplayedFailureError(
      outcome.meta.failure as { name: string; message: string; code?: string },
    );
  }
  const meta = (outcome.meta.value ?? {}) as StoredOutcome['meta'];
  return jsonSerializer.deserialize({ meta, body: outcome.body }) as T;
}
