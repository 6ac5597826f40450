import type { JsonValue, OperationContext } from '@idem/core';
import {
  checkFunction,
  checkOptionsObject,
  checkScopeGiven,
  type EngineOptions,
  engineForInvocation,
  type LambdaContextLike,
  requestFor,
  type ScopeOption,
  validateEngineOptions,
} from './lambda-engine.js';

/** What an idempotent handler may read besides its event and context. */
export interface IdempotencyInfo {
  /** Fencing token of this execution: pass it to downstream writes that reject a lower one. */
  fence: number;
  /**
   * Aborts when the lease is lost (another execution took the key over); in a batch also when
   * the batch gives the record up at the invocation's deadline (`timed_out`: a `TimeoutError`).
   */
  signal: AbortSignal;
  /** The storage key (stable for the scope and key). */
  storageKey: string;
  /**
   * The logical request's id (32 hex characters): the same for every execution of it (a
   * retry after a failure, a takeover after a timeout), new once the key is used again after
   * its record's retention passed. Name what the handler creates elsewhere by it.
   */
  originId: string;
}

/** Options of {@link makeIdempotent}. */
export interface MakeIdempotentOptions<TEvent, TResult, TContext extends LambdaContextLike>
  extends EngineOptions<TResult> {
  /**
   * The idempotency key of an invocation. A string of 1..255 printable ASCII characters is
   * used as it is; any other JSON value (an object of several fields, a long string) is
   * hashed (`deriveKey`). MUST be the same for every retry of one logical request.
   */
  key: (event: TEvent, context: TContext) => JsonValue;
  /**
   * The part of the event that must be the same for a retry (fingerprinted as canonical
   * JSON). A later event with the same key and another payload fails with `MismatchError`.
   * Leave out what changes between deliveries (receive counts, trace headers).
   * @default none: the key alone decides
   */
  payload?: (event: TEvent, context: TContext) => JsonValue;
  /**
   * What keys are unique within: a value, or a function of the invocation. REQUIRED (else
   * `InvalidInputError` at creation): no default separates callers. For a key the caller
   * chooses (an `orderId` in an API request), scope by the caller's principal
   * (`(event) => ({ caller: event.requestContext.authorizer.principalId })`), or two callers
   * sending the same key share one record and the second gets the first's response.
   * `functionScope` (`['lambda', context.functionName]`, the former default, same storage
   * keys) is for keys no caller chooses.
   */
  scope: ScopeOption<TEvent, TContext>;
}

/** A Lambda handler in the async style; the third argument is idem's execution info. */
export type IdempotentHandler<TEvent, TResult, TContext> = (
  event: TEvent,
  context: TContext,
  idempotency: IdempotencyInfo,
) => Promise<TResult>;

/**
 * Wraps an async Lambda handler: the first invocation with a key runs it and records its
 * return value (JSON); every later invocation with that key gets the recorded value back
 * without running it. A duplicate that arrives while the first still runs fails at once with
 * `InProgressError` (code `IN_PROGRESS`, `retryAfterMs`), which Lambda's own retry (async
 * invocations, event sources) turns into a later attempt.
 *
 * The lease is capped by `context.getRemainingTimeInMillis()` and renewed by heartbeats until
 * the deadline, so a timed-out invocation frees its key when Lambda stops it.
 *
 * @throws whatever the handler threw (and the key is released for a retry, unless `isFinal`
 *   says otherwise), `InProgressError`, `MismatchError`, `StoreUnavailableError`,
 *   `LeaseLostError`, `InvalidKeyError`, `ReplayedFailureError` (see `@idem/core`).
 */
export function makeIdempotent<TEvent, TResult, TContext extends LambdaContextLike>(
  handler: IdempotentHandler<TEvent, TResult, TContext>,
  options: MakeIdempotentOptions<TEvent, TResult, TContext>,
): (event: TEvent, context: TContext) => Promise<TResult> {
  // Checks the options once, at wrapping time, not at the first invocation.
  checkFunction('handler', handler);
  checkOptionsObject(options);
  const { key, payload, scope, ...engineOptions } = options;
  checkFunction('key', key);
  checkFunction('payload', payload, true);
  checkScopeGiven('makeIdempotent', scope);
  validateEngineOptions(engineOptions);
  return async (event, context) => {
    const request = requestFor(
      event,
      context,
      key(event, context),
      payload?.(event, context),
      scope,
    );
    const engine = engineForInvocation(engineOptions, context);
    const { value } = await engine.execute(request, (ctx: OperationContext) =>
      handler(event, context, ctx),
    );
    return value;
  };
}
