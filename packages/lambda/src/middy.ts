import {
  type Execution,
  jsonSerializer,
  OutcomeNotRecordedError,
  ReplayedFailureError,
  type StoredOutcome,
} from '@idem/core';
import {
  checkFunction,
  checkOptionsObject,
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
}

/** Options of {@link idempotency}: those of `makeIdempotent` without a custom serializer or policy. */
export type MiddyIdempotencyOptions<TEvent, TResult, TContext extends LambdaContextLike> = Omit<
  MakeIdempotentOptions<TEvent, TResult, TContext>,
  'serializer' | 'isFinal'
>;

/** The handler's view of the execution: `context.idempotency` while it runs. */
export type ContextWithIdempotency<TContext> = TContext & { idempotency?: IdempotencyInfo };

/**
 * The Middy middleware: `middy(handler).use(idempotency({ store, key }))`.
 *
 * `before` acquires the key: a recorded response is returned at once (the handler does not
 * run), a duplicate in progress throws `InProgressError`; otherwise the handler runs with
 * `context.idempotency` (fence, signal, storageKey) and `after` records its response
 * (owner-checked) before Middy returns it. When the handler throws, `onError` releases the key
 * so a retry runs again (successes only are recorded; the JSON serializer is used); once the
 * handler has returned, the key is never released: an error in a later `after` leaves a
 * not-recorded marker, an early answer from a later `after` is recorded. Put it first in
 * `.use()` so that the response it records is the one the later middlewares' `after` produced.
 */
export function idempotency<TEvent, TResult, TContext extends LambdaContextLike>(
  options: MiddyIdempotencyOptions<TEvent, TResult, TContext>,
): IdempotencyMiddleware<TEvent, TResult, TContext> {
  checkOptionsObject(options);
  const { key, payload, scope, ...engineOptions } = options;
  checkFunction('key', key);
  checkFunction('payload', payload, true);
  validateEngineOptions(engineOptions);
  // The invocation of each request between `before` and its end, by request object, for this
  // middleware alone (`request.internal` is shared by every middleware, and by every
  // invocation when the plugin sets one).
  const invocations = new WeakMap<object, Invocation>();
  return {
    async before(request) {
      const { event, context } = request;
      invocations.delete(request); // (a request object used again: its last invocation is over)
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
        writes: 0,
        failed: false,
        decision: undefined,
        settled: false,
        early: false,
        answerWaits: false,
      };
      invocations.set(request, invocation);
      watchRequest(invocations, request, invocation);
      (request.context as ContextWithIdempotency<TContext>).idempotency = {
        fence: execution.fence,
        get signal() {
          return execution.signal;
        },
        storageKey: execution.storageKey,
      };
      return undefined;
    },
    async after(request) {
      const invocation = invocations.get(request);
      if (!invocation || invocation.decision) return;
      const { execution } = invocation;
      let outcome: StoredOutcome;
      try {
        outcome = outcomeOf(request.response);
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
      if (!invocation.decision) decideOnError(invocation, invocation.writes >= 2);
      await invocation.decision?.catch(() => {});
    },
  };
}

/** What one `idempotency()` knows of one invocation it acquired the key for. */
interface Invocation {
  execution: Execution;
  /** Writes of `request.response` seen before `request.error` was first set. */
  writes: number;
  /** `request.error` was set: Middy runs the `onError` chain. */
  failed: boolean;
  /** The one decision (record, not-recorded marker or release) once made: its store write. */
  decision: Promise<void> | undefined;
  /** The decision's write has settled. */
  settled: boolean;
  /** `request.earlyResponse` was assigned: a chain ended early. */
  early: boolean;
  /** Middy copied the early answer to `request.response`: its answer waits for the write. */
  answerWaits: boolean;
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
 * Watches the request the key was acquired for, to make the one decision of the invocation
 * whichever way Middy ends it, and to know whether the handler has returned (Middy tells no
 * middleware; a middleware after this one may end the chain where no hook of this one runs):
 *
 * - `request.response`: Middy writes the handler's result there before the `after` chain (even
 *   `undefined`), and resets it to `undefined` when it catches an error, just before it sets
 *   `request.error`. A write before the error is the handler's return, or that reset.
 * - `request.error`: Middy sets it when it catches an error, then runs `onError`. The decision
 *   is made then (see {@link decideOnError}): with two writes before it, the handler returned.
 * - `request.earlyResponse`: Middy 6 sets it whenever a hook returns a value (in `before`,
 *   `after` or `onError`), or a hook sets it, and ends that chain: no hook of this middleware
 *   may run after it. An inherited setter catches the first assignment (it then defines the own
 *   property Middy checks, holding the value as it is: `undefined` stays `undefined`, so an
 *   `onError` that sets it lets Middy rethrow). Before the handler (no write yet): nothing ran,
 *   the key is released. After the handler returned (`after` chain): the handler ran, so the
 *   key is never released; the early value, what the caller gets, is recorded and replayed
 *   (a value the JSON serializer refuses leaves a not-recorded marker instead). In the
 *   `onError` chain: the decision made when the error was set stands.
 *
 * Lambda freezes the environment once the handler has answered: a write still in flight then
 * would not land. Middy returns `request.response` (copied from `earlyResponse`) from an async
 * function; once Middy has copied an early answer there, while the decision's write is in
 * flight, reading `request.response` gives a promise of the value, so the invocation answers
 * once the write has landed; then it gives the value again (what `requestEnd` sees). Only in the
 * `onError` chain, where Middy rethrows when `request.response` is `undefined`, an undefined
 * answer is never a promise: the error goes out with the write still in flight (a release
 * that does not land leaves the key to its lease, whose heartbeats have stopped).
 */
function watchRequest(
  invocations: WeakMap<object, Invocation>,
  request: object,
  invocation: Invocation,
): void {
  const current = (target: object) => invocations.get(target) === invocation;
  const proto = Object.create(Object.getPrototypeOf(request)) as object;
  Object.defineProperty(proto, 'earlyResponse', {
    configurable: true,
    set(this: object, value: unknown) {
      if (current(this)) {
        if (!invocation.decision) {
          const { execution } = invocation;
          if (invocation.failed) decideOnError(invocation, invocation.writes >= 2);
          else if (invocation.writes === 0 || execution.finished)
            decide(invocation, execution.finished ? Promise.resolve() : execution.release(), true);
          else recordEarly(invocation, value);
        }
        invocation.early = true;
      }
      // Up the chain: another such setter (a second `idempotency()`), else an own property.
      Reflect.set(Object.getPrototypeOf(proto) as object, 'earlyResponse', value, this);
    },
  });
  Object.setPrototypeOf(request, proto);

  const response = chainedProperty(request, 'response');
  Object.defineProperty(request, 'response', {
    configurable: true,
    enumerable: true,
    get(this: object) {
      const value = response.get(this);
      if (!current(this) || !invocation.answerWaits || invocation.settled) return value;
      if (value === undefined && invocation.failed) return value;
      return invocation.decision?.then(() => value) ?? value;
    },
    set(this: object, value: unknown) {
      if (current(this)) {
        if (!invocation.failed) invocation.writes += 1;
        // Middy's copy of the early answer (a hook that set it and reads on sees its values).
        if (invocation.early) invocation.answerWaits = true;
      }
      response.set(this, value);
    },
  });
  const error = chainedProperty(request, 'error');
  Object.defineProperty(request, 'error', {
    configurable: true,
    enumerable: true,
    get(this: object) {
      return error.get(this);
    },
    set(this: object, value: unknown) {
      error.set(this, value);
      if (!current(this) || invocation.failed) return;
      invocation.failed = true;
      if (!invocation.decision) decideOnError(invocation, invocation.writes >= 2);
    },
  });
}

/** The handler returned, then a later `after` answered early: its value is what is replayed. */
function recordEarly(invocation: Invocation, value: unknown): void {
  const { execution } = invocation;
  let outcome: StoredOutcome;
  try {
    outcome = outcomeOf(value);
  } catch {
    // The caller gets the value; a retry gets `OutcomeNotRecordedError`, never a second run.
    decide(invocation, execution.completeNotRecorded('not_serializable'), true);
    return;
  }
  // A failed write fails the invocation (through Middy's answer), as in `after`.
  decide(invocation, execution.complete(outcome), false);
}

/** Get and set of an own property as it was, a value or another middleware's accessor. */
function chainedProperty(
  target: object,
  name: string,
): { get(self: object): unknown; set(self: object, value: unknown): void } {
  const before = Object.getOwnPropertyDescriptor(target, name);
  if (before?.get || before?.set) {
    return {
      get: (self) => before.get?.call(self),
      set: (self, value) => before.set?.call(self, value),
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
