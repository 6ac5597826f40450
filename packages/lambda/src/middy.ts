import {
  type Execution,
  jsonSerializer,
  OutcomeNotRecordedError,
  ReplayedFailureError,
  type StoredOutcome,
} from '@idem/core';
import { engineForInvocation, type LambdaContextLike, requestFor } from './lambda-engine.js';
import type { IdempotencyInfo, MakeIdempotentOptions } from './make-idempotent.js';

/** The part of a Middy request the middleware uses (structurally Middy's `Request`). */
export interface MiddyRequestLike<TEvent, TResult, TContext> {
  event: TEvent;
  context: TContext;
  response: TResult | undefined | null;
  error?: unknown;
  internal: Record<string, unknown>;
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

/** Where the middleware keeps the execution between `before` and `after`. */
const EXECUTION = '@idem/lambda/execution';

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
  const { key, payload, scope, ...engineOptions } = options;
  engineForInvocation(engineOptions, { functionName: '', getRemainingTimeInMillis: () => 1e9 });
  return {
    async before(request) {
      const { event, context } = request;
      const req = requestFor(event, context, key(event, context), payload?.(event, context), scope);
      const begun = await engineForInvocation(engineOptions, context).begin(req);
      if (begun.kind === 'replay') {
        const value = replayed<TResult>(begun.outcome);
        request.response = value;
        // Middy ends the chain early when `before` returns a value.
        return value;
      }
      const { execution } = begun;
      request.internal[EXECUTION] = execution;
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
      const execution = take(request);
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
      const execution = take(request);
      // The handler failed before anything was recorded: the key goes back for a retry.
      if (execution && !execution.finished) await execution.release().catch(() => {});
    },
  };
}

function take<TEvent, TResult, TContext>(
  request: MiddyRequestLike<TEvent, TResult, TContext>,
): Execution | undefined {
  const execution = request.internal[EXECUTION] as Execution | undefined;
  delete request.internal[EXECUTION];
  return execution;
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
