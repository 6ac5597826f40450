import { AsyncLocalStorage } from 'node:async_hooks';
import type { ServerResponse } from 'node:http';
import * as v8 from 'node:v8';
import { isThenable } from '@idem/core';
import { answeredOutsideOf, type ResponseRecorder } from '@idem/http';
import { isObservable, Observable, type Subscription } from 'rxjs';

/**
 * The route handler of one recorded request, as the interceptor sees it: whether the work of
 * its calls is still running. An interceptor between this one and the handler (Nest's
 * documented `TimeoutInterceptor`) can answer while the handler still runs; that answer is not
 * the handler's outcome, and releasing the key on it would let a retry run the handler a
 * second time beside the first.
 */
export class HandlerRun {
  /**
   * Set while work of a handler call is known to run: a promise the handler returned that has
   * not settled, or, for an Observable it returned, a subscription of it that has not ended
   * or a promise made in the call's async context that has not settled (see
   * {@link HandlerCall}). Resolves true unless every call's outcome was a failure (its promise
   * rejected, its Observable failed). Nest calls the handler once per subscription (an
   * interceptor between that resubscribes, `retry()`, calls it again while the first call's
   * work may still run): every call is followed, `pending` lasts until all of them ended.
   */
  pending: Promise<boolean> | undefined;
  /**
   * The request was answered by something other than the handler while its work was pending:
   * the observable the interceptor subscribed to gave a value or an error that the handler's
   * own Observable was not giving at that moment (an interceptor between them timed out), or
   * the interceptor's own subscriber left (one outside it did).
   */
  overtaken = false;
  /**
   * Set once the interceptor's subscription ended (answered, failed, or left): Nest calls the
   * handler for the request no more, so a later call in this async context (work a pipe or a
   * guard started, a pool it created) is not one of the request's.
   */
  closed = false;
  /**
   * The function Nest calls for the request (`context.getHandler()`): a tracked method is
   * one of the request's calls only when it is that function, or what that function (a
   * decorator's wrapper above `@Idempotent()`) calls as the same method of the same instance.
   */
  handler: unknown;
  /**
   * The controller instances Nest calls the route's handler on (one per module declaring the
   * controller), when known (a controller of the default, singleton scope): a call of the
   * handler on any other object (an instance work of the request made itself) is not Nest's.
   */
  instances: ReadonlySet<object> | undefined;
  /**
   * The execution's lease signal (aborted once the key is lost: taken over, lapsed, or
   * `maxHoldMs` passed), read only when an Observable's work is watched: the watch ends then.
   */
  leaseSignal: (() => AbortSignal) | undefined;
  /**
   * Whether an Observable the handler returns is followed (the module's `followObservables`):
   * when not, no call is watched and the promise hooks are never enabled for the request.
   */
  followObservables = true;
  /**
   * Judges, at the handler's first call, whether it starts too late (see {@link lateStart}):
   * a promise when it must not start, settled once the refusal was answered.
   */
  private judge: (() => Promise<void> | undefined) | undefined;
  /** Units of work held (see {@link hold}) not ended yet. */
  private unsettled = 0;
  private fulfilled = false;
  private rejected = false;
  /**
   * Set when an Observable of the handler was torn down while nothing of its work ran (see
   * {@link HandlerCall.follow}): its work was stopped, not run to its end, so an answer that
   * overtook it is never marked answered_outside (its cleanup, a rollback, is awaited).
   */
  stopped = false;
  /**
   * How the handler's work last ended, when it did: true when it ran to its end (or may have),
   * false when it failed. Its answer is then on its way through the interceptors between this
   * one and the handler (see `recorderHeldForHandler`).
   */
  ranToEnd: boolean | undefined;
  private settleAll: ((fulfilled: boolean) => void) | undefined;
  /** How deep the interceptor is in passing on a notification of the handler's Observable. */
  private emitting = 0;
  /** Calls whose async context is watched now. */
  private readonly watched = new Set<HandlerCall>();
  /** Set once the outcome was recorded or released, or the lease lost: nothing is watched. */
  ended = false;
  private stopOnLeaseLoss: (() => void) | undefined;

  /**
   * Told of each {@link pending} as it is made (the interceptor gives it to the recorder's
   * `holdWhile`): while the handler's work runs, a client that left does not make its
   * response's silence count, past the head too (a `@Res()` handler that wrote its head and
   * still works is not stuck).
   */
  onPending: ((pending: Promise<boolean>) => void) | undefined;

  /** Sets what judges the handler's start at its first call (see {@link lateStart}). */
  judgeStart(judge: () => Promise<void> | undefined): void {
    this.judge = judge;
  }

  /**
   * At the handler's first call, where Nest really calls it (two microtask hops after the
   * interceptor's own check: its subscription, then Nest's `handle()`; the rev9 review): the
   * recorder's `lateStart` judged once more. `undefined`: call the handler. Otherwise the
   * handler must not start: the key was given back and a 503 written; what is returned to
   * Nest instead never settles (as the interceptor's `NEVER`), so that Nest sends nothing more.
   */
  lateStart(): Promise<never> | undefined {
    const judge = this.judge;
    this.judge = undefined;
    const refused = judge?.();
    if (refused === undefined) return undefined;
    return refused.then(
      () => new Promise<never>(() => {}),
      () => new Promise<never>(() => {}),
    );
  }

  /**
   * Whether a tracked method called as `self[key]` is the request's handler (see
   * {@link handler}), on an instance Nest calls it on (see {@link instances}).
   */
  calledAs(tracked: unknown, self: unknown, key: PropertyKey | undefined): boolean {
    if (this.instances !== undefined && !this.instances.has(self as object)) return false;
    if (this.handler === undefined || this.handler === tracked) return true;
    if (key === undefined || (typeof self !== 'object' && typeof self !== 'function')) return false;
    return self !== null && (self as Record<PropertyKey, unknown>)[key] === this.handler;
  }

  /**
   * Set once the interceptor passed on an answer (a value, an error, the end) or was given up:
   * what Nest sends from then on follows from it. A response ended before, from outside the
   * request's Nest pipeline, was answered by something else (see `recorderHeldForHandler`).
   */
  notified = false;

  /**
   * The handler writes its response itself (`@Res()` or `@Next()` without `passthrough`, as
   * Nest's own `isResponseHandled`): a response that ends while its work is pending may be its
   * own answer, written from a callback that runs in another async context (a pool, a queue or an
   * event bus made outside the request), not one from outside Nest (see `recorderHeldForHandler`).
   */
  ownsResponse = false;

  /** Notes that the request was answered, or given up, now. */
  answered(): void {
    this.notified = true;
    if (this.pending && this.emitting === 0) this.overtaken = true;
  }

  /**
   * Passes on a notification of the handler's Observable: what the interceptor gets meanwhile
   * is the handler's answer (see {@link answered}), and what runs downstream (interceptors,
   * Nest's response) is not the handler's work.
   */
  pass(notify: () => void): void {
    this.emitting++;
    try {
      insideHandler.run(undefined, notify);
    } finally {
      this.emitting--;
    }
  }

  /**
   * Holds one unit of the handler's work; answers what ends it, with its outcome: true
   * fulfilled, false failed, undefined neither (work that was only watched).
   */
  hold(): (outcome: boolean | undefined) => void {
    if (this.unsettled++ === 0) {
      this.fulfilled = false;
      this.rejected = false;
      this.stopped = false;
      this.ranToEnd = undefined;
      // Made outside any handler's context: a call watching its promises must not wait on it.
      this.pending = insideHandler.run(undefined, () => {
        const pending = new Promise<boolean>((resolve) => {
          this.settleAll = resolve;
        });
        this.onPending?.(pending);
        return pending;
      });
    }
    let done = false;
    return (outcome) => {
      if (done) return;
      done = true;
      if (outcome === true) this.fulfilled = true;
      else if (outcome === false) this.rejected = true;
      if (--this.unsettled > 0) return;
      // Cleared here, in a callback attached before Nest awaits the promise (or before the
      // Observable's end is passed on): before Nest sends the handler's own answer.
      const resolve = this.settleAll;
      this.ranToEnd = this.fulfilled || !this.rejected;
      this.pending = undefined;
      this.settleAll = undefined;
      resolve?.(this.ranToEnd);
    };
  }

  /** Starts watching a call's async context (see {@link HandlerCall}). */
  watch(call: HandlerCall): void {
    this.watched.add(call);
  }

  /** Stops watching a call's async context. */
  unwatch(call: HandlerCall): void {
    this.watched.delete(call);
  }

  /**
   * A call follows an Observable: its watch ends at the latest when the lease is lost (the
   * key was given up: a promise that never settles is not watched for ever).
   */
  boundByLease(): void {
    if (this.stopOnLeaseLoss || this.ended || !this.leaseSignal) return;
    const signal = this.leaseSignal();
    const stop = () => this.end();
    this.stopOnLeaseLoss = () => signal.removeEventListener('abort', stop);
    if (signal.aborted) this.end();
    else signal.addEventListener('abort', stop, { once: true });
  }

  /** The outcome was recorded or released, or the lease lost: no call is watched any more. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.stopOnLeaseLoss?.();
    for (const call of [...this.watched]) call.stop();
  }

  /**
   * Called by a tracked handler with what it returned; answers what Nest gets. A thenable that
   * is not a promise (a query builder that runs its query at each `then()`: Knex, Mongoose)
   * is turned into one promise, once, and that promise is what Nest awaits: following it and
   * Nest awaiting it must not run it twice. An Observable, returned or what the promise
   * resolves to, is followed through `call` (see {@link HandlerCall.follow}).
   */
  returned(result: unknown, call: HandlerCall): unknown {
    if (isThenable(result)) {
      const promise = result instanceof Promise ? result : Promise.resolve(result);
      const release = this.hold();
      promise.then(
        () => release(true),
        () => release(false),
      );
      call.close();
      // An Observable the promise resolves to (an `async` method's) is followed too, from its
      // subscription on (what the method did before it returned is not watched).
      return promise.then((value) =>
        isObservable(value) && this.followObservables ? call.follow(value) : value,
      );
    }
    if (isObservable(result) && this.followObservables) {
      const followed = call.follow(result);
      call.check();
      return followed;
    }
    call.close();
    return result;
  }
}

/**
 * Set while a tracked handler runs (and in what it awaits, and in the subscription of an
 * Observable it returned): a tracked method it calls in turn (a sibling route,
 * `super.method()`) is part of its call, not another call of the route; a promise made
 * there is its work, while its call is watched.
 */
const insideHandler = new AsyncLocalStorage<HandlerCall | undefined>();

/** The run of the request whose handler is called in this async context. */
export const handlerRuns = new AsyncLocalStorage<HandlerRun>();

/**
 * Promises made in a watched call's async context and not settled yet, with their call and the
 * call's hold they count for (its {@link HandlerCall.epoch} when made).
 */
const watchedPromises = new WeakMap<
  Promise<unknown>,
  { call: HandlerCall; epoch: number; root: boolean; seq: number }
>();
/** Calls watched now: V8's promise hooks are on while there is one. */
let watching = 0;
let stopHooks: (() => void) | undefined;
const hooks = {
  init(promise: Promise<unknown>, parent?: Promise<unknown>): void {
    const call = insideHandler.getStore();
    if (call?.watching) call.made(promise, parent === undefined);
  },
  settled(promise: Promise<unknown>): void {
    const made = watchedPromises.get(promise);
    if (!made) return;
    watchedPromises.delete(promise);
    made.call.unmade(made.epoch, made.root ? promise : undefined, made.seq);
  },
};
/**
 * V8's promise hooks, where the runtime has them (Node 16.14 and later; read through the
 * namespace, so that a runtime without them still loads this module: nothing is watched there).
 */
const promiseHooks = (v8 as { promiseHooks?: typeof v8.promiseHooks }).promiseHooks;
function hooksOn(): void {
  if (watching++ === 0 && typeof promiseHooks?.createHook === 'function') {
    stopHooks = promiseHooks.createHook(hooks) as () => void;
  }
}
function hooksOff(): void {
  if (--watching > 0) return;
  const stop = stopHooks;
  stopHooks = undefined;
  stop?.();
}

/**
 * One call of a tracked handler for the request. While it runs, and for an Observable it
 * returns, while its subscription lasts and after, it holds the run (see
 * {@link HandlerRun.pending}) for its work: the promises made in its async context (the
 * handler's own code and what it awaits, an `async` function it starts, what the Observable
 * does when subscribed or torn down), watched with V8's promise hooks (on only while a call
 * is watched). An Observable torn down by an interceptor (a timeout) stops what its teardown
 * stops (an `HttpService` request is aborted, its promise rejects); the promise behind
 * `from(promise)` goes on, and the key stays held until it settled. Work that no promise
 * stands for (a callback timer, an event listener) is not seen.
 */
class HandlerCall {
  watching = false;
  private release: ((outcome: boolean | undefined) => void) | undefined;
  private promises = 0;
  /**
   * Grows at each {@link close}: the promises counted before it are no longer the call's
   * (their settles, when the hooks see them at all, are ignored). A promise-returning call is
   * closed when it returns, and its hold is the promise's; an Observable that promise resolves
   * to reopens the call with a count of its own (what the method did before it returned is not
   * watched, as for an `async` method).
   */
  epoch = 0;
  private subscriptions = 0;
  private outcome: boolean | undefined;
  /**
   * Set once a subscription was torn down while promises of the call's work were pending (see
   * {@link follow}): how that work then ends decides the call's outcome (see {@link check}).
   */
  private tornDown = false;
  /**
   * The promise that stands for the call's work after the teardown, among those not derived from
   * another (`then`): an `async` function's, a `new Promise`'s, what `from(promise)` follows. The
   * oldest of those still pending at the teardown (the work the Observable followed, made before
   * what it awaits), with its order of making ({@link rootSeq}); when none of them settled after
   * the teardown, the last one made after it that settled. rev33c: the last one to settle was
   * taken, and a side call the work fired at its end (an audit whose rejection the app handled)
   * decided: a charge run to its end was released, and a retry charged again.
   */
  private lastRoot: Promise<unknown> | undefined;
  private rootSeq: number | undefined;
  /** Order of making of the call's promises ({@link made}), and where the first teardown was. */
  private seq = 0;
  private tornAt = 0;

  constructor(readonly run: HandlerRun) {}

  /** Holds the run for this call's work and watches its async context. */
  open(): void {
    if (this.run.ended) return;
    this.release ??= this.run.hold();
    if (this.watching) return;
    this.watching = true;
    this.run.watch(this);
    hooksOn();
  }

  /** Stops watching (the hold is kept as it is). */
  stop(): void {
    if (!this.watching) return;
    this.watching = false;
    this.run.unwatch(this);
    hooksOff();
  }

  /** The call's work ended (or is followed otherwise): stops watching and ends its hold. */
  close(): void {
    this.stop();
    // Once not watched, a settle of what was counted may be missed: the count is dropped
    // with the hold it stood for (rev12d: a stale count kept a reopened call held).
    this.epoch++;
    this.promises = 0;
    this.tornDown = false;
    this.lastRoot = undefined;
    this.rootSeq = undefined;
    const release = this.release;
    this.release = undefined;
    release?.(this.outcome);
  }

  /**
   * Ends the hold once nothing of the call's work is known to run. After a teardown that left
   * work running, that work's last promise (see {@link lastRoot}) is read first: a rejection is
   * the call's failure (nest33: it was taken for work run to its end, and the answer that went
   * out was marked answered_outside, though a retry could have run it), as a handler's promise
   * that rejects after an answer from outside.
   */
  check(): void {
    if (this.subscriptions !== 0 || this.promises !== 0) return;
    const root = this.lastRoot;
    if (!this.tornDown || root === undefined) {
      this.close();
      return;
    }
    this.lastRoot = undefined;
    this.rootSeq = undefined;
    const epoch = this.epoch;
    // Read outside the call's context: the reaction is not the call's work.
    insideHandler.run(undefined, () =>
      root.then(
        () => {
          if (epoch === this.epoch) this.check();
        },
        () => {
          if (epoch !== this.epoch) return;
          this.outcome = false;
          this.check();
        },
      ),
    );
  }

  /** A promise was made in the call's async context (`root`: not derived from another). */
  made(promise: Promise<unknown>, root: boolean): void {
    watchedPromises.set(promise, { call: this, epoch: this.epoch, root, seq: this.seq++ });
    this.promises++;
  }

  /** A promise made in the call's async context settled (`root`: one not derived from another). */
  unmade(epoch: number, root?: Promise<unknown>, seq = 0): void {
    if (epoch !== this.epoch) return;
    if (root !== undefined && this.tornDown) this.noteRoot(root, seq);
    // Judged after the promise hook: it must neither make nor resolve a promise itself.
    if (--this.promises === 0) queueMicrotask(() => this.check());
  }

  /** A root promise of the call's work settled after the teardown (see {@link lastRoot}). */
  private noteRoot(root: Promise<unknown>, seq: number): void {
    const before = seq < this.tornAt;
    const held = this.rootSeq;
    // One made before the teardown wins over any made after it; among those, the oldest.
    if (held !== undefined && held < this.tornAt && (!before || seq > held)) return;
    this.lastRoot = root;
    this.rootSeq = seq;
  }

  /**
   * The Observable the handler returned, as Nest gets it: subscribed in the call's async
   * context; each subscription holds the run until it completes (fulfilled), fails (failed)
   * or is torn down (neither failed nor known to have ended: the answer that went out is
   * judged as usual), and the promises its subscription and teardown made are watched.
   */
  follow(source: Observable<unknown>): Observable<unknown> {
    this.run.boundByLease();
    return new Observable<unknown>((subscriber) => {
      this.subscriptions++;
      this.open();
      let ended = false;
      // true: completed, or torn down while its work ran (it may go on to its end); false:
      // failed; undefined: torn down while nothing of its work ran (see the teardown).
      const end = (outcome: boolean | undefined) => {
        if (ended) return;
        ended = true;
        if (outcome === true) this.outcome = true;
        else if (outcome === false) this.outcome ??= false;
        this.subscriptions--;
        this.check();
      };
      let inner: Subscription | undefined;
      insideHandler.run(this, () => {
        inner = source.subscribe({
          next: (value) => this.run.pass(() => subscriber.next(value)),
          error: (error: unknown) => {
            end(false);
            this.run.pass(() => subscriber.error(error));
          },
          complete: () => {
            end(true);
            this.run.pass(() => subscriber.complete());
          },
        });
      });
      return () => {
        // No promise of the call's work pending: the teardown stops all of it (a timer, a
        // cancellable source), and what the teardown starts is cleanup (a rollback), not work
        // that runs on to its end: neither fulfilled nor failed, the answer judged as usual once
        // the cleanup ended, never the answered_outside marker (rev32d).
        const stopped = this.promises === 0;
        // A teardown of the source that throws (a driver's cancel on a closed handle) still
        // ends this subscription's hold: nothing of it runs any more (rev12d).
        if (stopped) this.run.stopped = true;
        else if (!this.tornDown) {
          this.tornDown = true;
          this.tornAt = this.seq;
        }
        try {
          insideHandler.run(this, () => inner?.unsubscribe());
        } finally {
          end(stopped ? undefined : true);
        }
      };
    });
  }
}

const TRACKED = Symbol.for('@idem/nestjs.tracked-handler');
/** The class of `async` functions: one always returns a promise, the work followed as such. */
const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor as unknown;

/**
 * A route handler that reports its calls to the {@link HandlerRun} of its request (none
 * outside an idempotent request: it is then the handler itself). It carries the original's
 * reflect metadata (route path, method, and every decorator's applied before it) and its
 * name. `key` is the method's name on its class.
 */
export function trackedHandler<F extends (...args: never[]) => unknown>(
  handler: F,
  key?: PropertyKey,
): F {
  if ((handler as { [TRACKED]?: true })[TRACKED]) return handler;
  // Only a method that may return an Observable has its synchronous part watched (the promise
  // hooks cost a few microseconds a call): not an `async` one.
  const mayObserve = !(handler instanceof (AsyncFunction as typeof Function));
  const tracked = function (this: unknown, ...args: never[]) {
    const run = handlerRuns.getStore();
    if (
      !run ||
      run.closed ||
      insideHandler.getStore()?.run === run ||
      !run.calledAs(tracked, this, key)
    )
      return handler.apply(this, args);
    const refused = run.lateStart();
    if (refused) return refused;
    const call = new HandlerCall(run);
    if (mayObserve && run.followObservables) call.open();
    let result: unknown;
    try {
      result = insideHandler.run(call, () => handler.apply(this, args));
    } catch (error) {
      call.close();
      throw error;
    }
    return run.returned(result, call);
  };
  const reflect = Reflect as unknown as {
    getOwnMetadataKeys?(target: object): unknown[];
    getOwnMetadata(key: unknown, target: object): unknown;
    defineMetadata(key: unknown, value: unknown, target: object): void;
  };
  if (typeof reflect.getOwnMetadataKeys === 'function') {
    for (const key of reflect.getOwnMetadataKeys(handler)) {
      reflect.defineMetadata(key, reflect.getOwnMetadata(key, handler), tracked);
    }
  }
  Object.defineProperty(tracked, 'name', { value: handler.name, configurable: true });
  Object.defineProperty(tracked, 'length', { value: handler.length, configurable: true });
  Object.defineProperty(tracked, TRACKED, { value: true });
  return tracked as unknown as F;
}

/**
 * The recorder as `recordServerResponse` gets it: a `finish` or `fail` that comes while the
 * handler's work is still pending and something else answered (see `overtaken`; or the
 * response ended outside the request's Nest pipeline, by Express middleware or a Fastify hook
 * mounted before Nest's router, a timeout: see `answeredOutside`; a handler that ends a
 * `@Res()` response itself is recorded as before) lets the answer go out at once, but keeps
 * the key held (its lease renewed) until the handler's work ended; then the key is released if
 * the handler failed; otherwise (it ran to its end, or its Observable was torn down: its work
 * may have happened) an answer that went out final is recorded as usual, and one that is not
 * leaves the `answered_outside` not-recorded marker (a 500 `outcome-not-recorded` problem to
 * retries, never a second run of work that may have happened). Once the outcome goes to the
 * recorder, the run's watch ends (see {@link HandlerRun.end}).
 */
export function recorderHeldForHandler(
  recorder: ResponseRecorder,
  run: HandlerRun,
  res?: ServerResponse,
): ResponseRecorder {
  let deferred: Promise<void> | undefined;
  // The end that was taken for an answer from outside may have been the handler's own (see
  // `overtaken`): a `@Res()` handler's end from a callback that lost its async context (a pool,
  // rev32d). It is its own when the handler's work ended within the turn the end came in (its
  // callback ended the response and returned) and the handler never wrote to the response after
  // it: the answer is then judged as usual, never marked. Otherwise (nest33) the end came from
  // outside (a timeout before Nest's router) and the handler ran on: marked as any other.
  let perhapsOwn = false;
  let ranOn = false;
  // A handler that writes its response itself wrote to it (or tried: Express throws
  // ERR_HTTP_HEADERS_SENT) after the answer from outside, while its work was pending: it reached
  // its own answer, so its work ran, whether or not that write threw (nest33: the throw released
  // the key and a retry ran the handler again).
  let wroteAfter = false;
  const later = (settle: () => Promise<void>, pending: Promise<boolean>): Promise<void> => {
    if (run.ownsResponse && res)
      watchLateWrites(res, run, () => {
        wroteAfter = true;
      });
    if (perhapsOwn) {
      const turn = setTimeout(() => {
        ranOn = true;
      }, 0);
      turn.unref?.();
    }
    // Attached outside the handler's context: a call watching its promises must not wait on it.
    deferred ??= insideHandler.run(undefined, () =>
      pending.then((fulfilled) => {
        run.end();
        if (!fulfilled && !wroteAfter) return recorder.fail(new Error('The handler failed'));
        const own = perhapsOwn && !ranOn && !wroteAfter;
        // Its work ran to its end (or may have: torn down): never released for a retry to run.
        if (!own && !run.stopped) answeredOutsideOf(recorder)?.();
        return settle().catch(() => {});
      }),
    );
    return Promise.resolve();
  };
  const now = (settle: () => Promise<void>): Promise<void> => {
    run.end();
    if (outsideAfterEnd()) answeredOutsideOf(recorder)?.();
    return settle();
  };
  // Ended while the handler's work is pending, before the interceptor passed on any answer (Nest
  // sends one only after that), and outside the async context the handler runs in (a `@Res()`
  // handler ending the response itself): middleware or a hook mounted before Nest's router
  // answered (a request timeout), which the interceptor never sees. Unless the handler writes its
  // response itself: its own code may end it from a callback that lost its async context (a pool
  // made outside the request, rev32d), and its own answer that is not final must stay retryable:
  // the key is then held until its work ended and the answer judged as usual (released), never
  // marked.
  const overtaken = () => {
    if (!run.overtaken && run.pending && !run.notified && handlerRuns.getStore() !== run) {
      run.overtaken = true;
      perhapsOwn = run.ownsResponse;
    }
    return run.overtaken;
  };
  // Ended from outside as `overtaken`, but after the handler's work ran to its end, while its
  // answer was still on its way through the interceptors between this one and the handler (an
  // audit or a transform that awaits): the handler ran, its result reached no response (rev32d:
  // released, a retry ran it a second time). Not for a handler that writes its response itself.
  const outsideAfterEnd = () =>
    !run.overtaken &&
    !run.pending &&
    !run.notified &&
    run.ranToEnd === true &&
    !run.stopped &&
    !run.ownsResponse &&
    handlerRuns.getStore() !== run;
  const held = Object.create(recorder) as ResponseRecorder;
  Object.defineProperties(held, {
    finish: {
      value: () => {
        if (deferred) return Promise.resolve();
        const pending = overtaken() ? run.pending : undefined;
        const settle = () => recorder.finish();
        return pending ? later(settle, pending) : now(settle);
      },
    },
    fail: {
      value: (error: unknown) => {
        if (deferred) return Promise.resolve();
        const pending = overtaken() ? run.pending : undefined;
        const settle = () => recorder.fail(error);
        return pending ? later(settle, pending) : now(settle);
      },
    },
  });
  return held;
}

/** The methods through which a handler writes its Node response (Express's and Fastify's end in them). */
const WRITE_METHODS = ['setHeader', 'writeHead', 'write', 'end'] as const;

/**
 * Tells `wrote` when the handler's code writes to `res` (or tries to) after an answer from
 * outside ended it, while the handler's work is still pending (what Nest writes once that work
 * ended, an exception filter's end, is not the handler's).
 */
function watchLateWrites(res: ServerResponse, run: HandlerRun, wrote: () => void): void {
  const target = res as unknown as Record<string, unknown>;
  for (const name of WRITE_METHODS) {
    const method = target[name];
    if (typeof method !== 'function') continue;
    target[name] = function (this: unknown, ...args: unknown[]) {
      if (run.pending) wrote();
      return (method as (...args: unknown[]) => unknown).apply(this, args);
    };
  }
}
