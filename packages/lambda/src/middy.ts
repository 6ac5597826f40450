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
 * (owner-checked) before Middy returns it. `onError` releases the key so a retry runs again
 * (successes only are recorded; the JSON serializer is used). Put it first in `.use()` so
 * that the response it records is the one the later middlewares' `after` produced.
 */
export function idempotency<TEvent, TResult, TContext extends LambdaContextLike>(
  options: MiddyIdempotencyOptions<TEvent, TResult, TContext>,
): IdempotencyMiddleware<TEvent, TResult, TContext> {
  checkOptionsObject(options);
  const { key, payload, scope, ...engineOptions } = options;
  checkFunction('key', key);
  checkFunction('payload', payload, true);
  validateEngineOptions(engineOptions);
  // The execution of each request between `before` and `after`/`onError`, by request object,
  // for this middleware alone (`request.internal` is shared by every middleware, and by
  // every invocation when the plugin sets one).
  const executions = new WeakMap<object, Execution>();
  return {
    async before(request) {
      const { event, context } = request;
      const req = requestFor(event, context, key(event, context), payload?.(event, context), scope);
      const begun = await engineForInvocation(engineOptions, context).begin(req);
      if (begun.kind === 'replay') {
        const value = replayed<TResult>(begun.outcome);
        request.response = value;
        // Middy 6 ends the chain (no handler, no `after`) when `request.earlyResponse` is an own
        // property, whatever its value; a returned value alone would not end it for `undefined`
        // (the usual return of an SQS / SNS / EventBridge handler), which would run again.
        request.earlyResponse = value;
        return value;
      }
      const { execution } = begun;
      executions.set(request, execution);
      releaseOnEarlyResponse(executions, request, execution);
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
      const execution = take(executions, request);
      if (!execution) return;
      let outcome: StoredOutcome;
      try {
        const value = jsonSerializer.serialize(request.response);
        outcome = { meta: { kind: 'value', value: value.meta }, body: value.body };
      } catch (cause) {
        // The handler ran: a marker keeps a retry from running it again.
        await execution.completeNotRecorded('not_serializable').catch(() => {});
        throw new OutcomeNotRecordedError('not_serializable', { cause });
      }
      await execution.complete(outcome);
    },
    async onError(request) {
      const execution = take(executions, request);
      // The handler failed before anything was recorded: the key goes back for a retry.
      if (execution && !execution.finished) await execution.release().catch(() => {});
    },
  };
}

function take(executions: WeakMap<object, Execution>, request: object): Execution | undefined {
  const execution = executions.get(request);
  executions.delete(request);
  return execution;
}

/**
 * A middleware after this one that answers early (its `before` returns a value, or sets
 * `request.earlyResponse`) makes Middy skip the handler and every `after`, and no `onError`
 * runs: no hook of this middleware would ever see the end of the invocation, and the key
 * would stay in progress (heartbeats renewing it) until the deadline. Middy marks that end by
 * assigning `request.earlyResponse`: an inherited setter catches the assignment, releases the
 * key (nothing ran, nothing to record) and defines the own property Middy checks, holding a
 * promise of the same value that settles once the release has landed. Middy returns
 * `request.response`, which it sets from `earlyResponse`, from an async function: the
 * invocation's result is that value, answered only after the key is free (Lambda freezes the
 * environment once the handler has answered: a release still in flight then would not land).
 */
function releaseOnEarlyResponse(
  executions: WeakMap<object, Execution>,
  request: object,
  execution: Execution,
): void {
  const proto = Object.create(Object.getPrototypeOf(request)) as object;
  Object.defineProperty(proto, 'earlyResponse', {
    configurable: true,
    set(this: object, value: unknown) {
      let answer: unknown = value;
      if (take(executions, this) === execution && !execution.finished) {
        answer = execution.release().then(
          () => value,
          () => value, // the lease runs out instead (heartbeats already stopped)
        );
      }
      // Up the chain: another such setter (a second `idempotency()`), else an own property.
      Reflect.set(Object.getPrototypeOf(proto) as object, 'earlyResponse', answer, this);
    },
  });
  Object.setPrototypeOf(request, proto);
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
