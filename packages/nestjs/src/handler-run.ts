import { AsyncLocalStorage } from 'node:async_hooks';
import type { ResponseRecorder } from '@idem/http';

/**
 * The route handler of one recorded request, as the interceptor sees it: whether it returned
 * a promise that has not settled yet. An interceptor between this one and the handler (Nest's
 * documented `TimeoutInterceptor`) can answer while the handler still runs; that answer is not
 * the handler's outcome, and releasing the key on it would let a retry run the handler a
 * second time beside the first.
 */
export class HandlerRun {
  /**
   * Set while a promise the handler returned has not settled: resolves true when one of them
   * fulfilled, false when every one rejected. Nest calls the handler once per subscription
   * (an interceptor between that resubscribes, `retry()`, calls it again while the first
   * call's work may still run): every call's promise is followed, `pending` lasts until all
   * settled.
   */
  pending: Promise<boolean> | undefined;
  /**
   * The request was answered by something other than the handler while its promise was
   * pending: the observable the interceptor subscribed to gave a value or an error (an
   * interceptor between them timed out), or the interceptor's own subscriber left (one
   * outside it did).
   */
  overtaken = false;
  /**
   * Set once the interceptor's subscription ended (answered, failed, or left): Nest calls the
   * handler for the request no more, so a later call in this async context (work a pipe or a
   * guard started, a pool it created) is not one of the request's.
   */
  closed = false;
  /**
   * Judges, at the handler's first call, whether it starts too late (see {@link lateStart}):
   * a promise when it must not start, settled once the refusal was answered.
   */
  private judge: (() => Promise<void> | undefined) | undefined;
  /** Calls whose promise has not settled yet. */
  private unsettled = 0;
  private fulfilled = false;
  private settleAll: ((fulfilled: boolean) => void) | undefined;

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

  /** Notes that the request was answered, or given up, now. */
  answered(): void {
    if (this.pending) this.overtaken = true;
  }

  /**
   * Called by a tracked handler with what it returned; answers what Nest gets. A thenable that
   * is not a promise (a query builder that runs its query at each `then()`: Knex, Mongoose)
   * is turned into one promise, once, and that promise is what Nest awaits: following it and
   * Nest awaiting it must not run it twice.
   */
  returned(result: unknown): unknown {
    if (
      !(
        (typeof result === 'object' || typeof result === 'function') &&
        result !== null &&
        typeof (result as PromiseLike<unknown>).then === 'function'
      )
    )
      return result;
    const promise =
      result instanceof Promise ? result : Promise.resolve(result as PromiseLike<unknown>);
    if (this.unsettled++ === 0) {
      this.fulfilled = false;
      this.pending = new Promise<boolean>((resolve) => {
        this.settleAll = resolve;
      });
    }
    const settled = (fulfilled: boolean) => {
      if (fulfilled) this.fulfilled = true;
      if (--this.unsettled > 0) return;
      // Cleared here, in a callback attached before Nest awaits the promise: before Nest
      // sends the handler's own answer.
      const resolve = this.settleAll;
      this.pending = undefined;
      this.settleAll = undefined;
      resolve?.(this.fulfilled);
    };
    promise.then(
      () => settled(true),
      () => settled(false),
    );
    return promise;
  }
}

/**
 * Set while a tracked handler runs (and in what it awaits): a tracked method it calls in turn
 * (a sibling route, `super.method()`) is part of its call, not another call of the route.
 */
const insideHandler = new AsyncLocalStorage<HandlerRun>();

/** The run of the request whose handler is called in this async context. */
export const handlerRuns = new AsyncLocalStorage<HandlerRun>();

const TRACKED = Symbol.for('@idem/nestjs.tracked-handler');

/**
 * A route handler that reports what it returned to the {@link HandlerRun} of its request
 * (none outside an idempotent request: it is then the handler itself). It carries the
 * original's reflect metadata (route path, method, and every decorator's applied before it)
 * and its name.
 */
export function trackedHandler<F extends (...args: never[]) => unknown>(handler: F): F {
  if ((handler as { [TRACKED]?: true })[TRACKED]) return handler;
  const tracked = function (this: unknown, ...args: never[]) {
    const run = handlerRuns.getStore();
    if (!run || run.closed || insideHandler.getStore() === run) return handler.apply(this, args);
    const refused = run.lateStart();
    if (refused) return refused;
    return insideHandler.run(run, () => run.returned(handler.apply(this, args)));
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
 * handler's promise is still pending and something else answered (see `overtaken`; a handler
 * that ends a `@Res()` response itself is recorded as before) lets the answer go out at
 * once, but keeps the key held (its lease renewed) until the handler settled; then the key is
 * released if the handler failed, and otherwise the answer that went out is judged as usual.
 */
export function recorderHeldForHandler(
  recorder: ResponseRecorder,
  run: HandlerRun,
): ResponseRecorder {
  let deferred: Promise<void> | undefined;
  const later = (settle: () => Promise<void>, pending: Promise<boolean>): Promise<void> => {
    deferred ??= pending.then((fulfilled) =>
      fulfilled ? settle().catch(() => {}) : recorder.fail(new Error('The handler failed')),
    );
    return Promise.resolve();
  };
  const held = Object.create(recorder) as ResponseRecorder;
  Object.defineProperties(held, {
    finish: {
      value: () => {
        if (deferred) return Promise.resolve();
        const pending = run.overtaken ? run.pending : undefined;
        return pending ? later(() => recorder.finish(), pending) : recorder.finish();
      },
    },
    fail: {
      value: (error: unknown) => {
        if (deferred) return Promise.resolve();
        const pending = run.overtaken ? run.pending : undefined;
        return pending ? later(() => recorder.fail(error), pending) : recorder.fail(error);
      },
    },
  });
  return held;
}
