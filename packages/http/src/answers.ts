import { InProgressError, isIdemError } from '@idem/core';
import type { IdempotencyDecision } from './handler.js';
import { respondWith } from './prepared-response.js';
import { PROBLEM_TYPES, type ProblemType, prepareProblem, problemResponse } from './problem.js';
import type { ResponseRecorder } from './recorder.js';

/** One of the library's own answers (never recorded as the handler's outcome). @internal */
export function respond(
  status: number,
  type: ProblemType,
  title: string,
  detail: string,
  headers?: Record<string, string>,
): Extract<IdempotencyDecision, { action: 'respond' }> {
  return respondWith(prepareProblem({ type, title, status, detail }, headers), false);
}

/** 413 before anything is stored. @internal */
export function tooLarge(
  detail = 'The request body exceeds the configured limit',
): IdempotencyDecision {
  return respond(413, PROBLEM_TYPES.bodyTooLarge, 'Request body too large', detail);
}

/** 400 before anything is stored: the body is not what its content type says. @internal */
export function malformedBody(detail: string): IdempotencyDecision {
  return respond(400, PROBLEM_TYPES.malformedBody, 'Malformed request body', detail);
}

/** 503 + Retry-After: the store could not be reached; retry later with the same key. @internal */
export function storeUnavailable(
  retryAfterSeconds: number,
): Extract<IdempotencyDecision, { action: 'respond' }> {
  return respond(
    503,
    PROBLEM_TYPES.storeUnavailable,
    'Idempotency store unavailable',
    'Retry later with the same key',
    { 'retry-after': String(retryAfterSeconds) },
  );
}

/**
 * 503 + Retry-After: a bounded store is full of live records and took no new key; retry
 * later with the same key (records expire, or the operator raises the budget). @internal
 */
export function storeFull(
  retryAfterSeconds: number,
): Extract<IdempotencyDecision, { action: 'respond' }> {
  return respond(
    503,
    PROBLEM_TYPES.storeFull,
    'Idempotency store full',
    'The idempotency store has no room for a new key; nothing was run. Retry later with the same key',
    { 'retry-after': String(retryAfterSeconds) },
  );
}

/** How the answers to engine errors are tuned. @internal */
export interface BeginAnswers {
  failOpen: boolean;
  /** `Retry-After` (s) of the 503. */
  unavailableRetryAfter: number;
  /** Largest `Retry-After` (s) of the 409. */
  inProgressRetryAfter: number;
}

/**
 * The answer to an error of `engine.begin`: 422, 409, 503 (or a pass when failing open, never
 * for an acquisition answered too late in its lease), a
 * 500 for an outcome that was not recorded or does not decode; undefined for an error
 * that is not the state machine's (rethrown).
 * @internal
 */
export function answerBeginError(
  error: unknown,
  tuning: BeginAnswers,
): IdempotencyDecision | undefined {
  if (isIdemError(error, 'MISMATCH')) {
    return respond(
      422,
      PROBLEM_TYPES.keyReused,
      'Idempotency-Key reused',
      'This key was already used with a different request',
    );
  }
  if (error instanceof InProgressError) {
    const seconds = Math.max(
      1,
      Math.min(tuning.inProgressRetryAfter, Math.ceil(error.retryAfterMs / 1000)),
    );
    return respond(
      409,
      PROBLEM_TYPES.inProgress,
      'Request in progress',
      'A request with this key is still being processed',
      { 'retry-after': String(seconds) },
    );
  }
  // The store answered the acquisition too late in its lease (or not before it was nearly
  // over): the handler did not run, and must not run unprotected either (`failOpen`), since
  // a caller may take the key over once that lease passes. The acquisition is given back:
  // a retry with the same key runs.
  if (isIdemError(error, 'LEASE_LOST')) return storeUnavailable(tuning.unavailableRetryAfter);
  if (isIdemError(error, 'STORE_UNAVAILABLE') || isIdemError(error, 'STORE_FULL')) {
    if (tuning.failOpen) return { action: 'pass', reason: 'fail-open' };
    if (isIdemError(error, 'STORE_FULL')) return storeFull(tuning.unavailableRetryAfter);
    return storeUnavailable(tuning.unavailableRetryAfter);
  }
  // The first request ran; its response was over maxOutcomeBytes (or the store refused it),
  // or it was answered outside the middleware (a request timeout) while the handler ran on.
  if (isIdemError(error, 'OUTCOME_NOT_RECORDED')) {
    return respond(
      500,
      PROBLEM_TYPES.outcomeNotRecorded,
      'Outcome not recorded',
      (error as { reason?: unknown }).reason === 'answered_outside'
        ? 'The first request with this key ran to its end, but its response had already been answered by something outside the idempotency middleware (a request timeout), so its outcome is unknown; it will not be processed again with this key'
        : 'The first request with this key was processed, but its response could not be recorded (too large for the idempotency store); it will not be processed again with this key',
    );
  }
  // The store returned outcome bytes that do not decode (a replay found them).
  if (isIdemError(error, 'OUTCOME_CORRUPT')) return outcomeUnreadable();
  return undefined;
}

/**
 * 500: the outcome recorded for the key cannot be read. Why is the server's business (a custom
 * outcomeCodec's own words, a key id, the store's encoding): it goes to `onWarning`, never to
 * the client (the corerev3 review). @internal
 */
export function outcomeUnreadable(): Extract<IdempotencyDecision, { action: 'respond' }> {
  return respond(
    500,
    PROBLEM_TYPES.outcomeUnreadable,
    'Stored outcome unreadable',
    'The response recorded for this key cannot be read; the request is not processed again with this key',
  );
}

/**
 * The handler threw (or gave nothing sendable): a 500 problem, recorded when the policy makes
 * it final (or throws on it); otherwise the key is released and the error rethrown to the framework.
 * @internal
 */
export async function answerFailure(
  recorder: ResponseRecorder,
  error: unknown,
  signal: AbortSignal,
): Promise<Response> {
  const failure = problemResponse({
    type: PROBLEM_TYPES.handlerFailed,
    title: 'Internal Server Error',
    status: 500,
  });
  let final: boolean;
  try {
    final = recorder.start(failure.status, failure.headers);
  } catch (error) {
    // Not the policy (one that throws makes this 500 final, see `createRecorder`): a recorder
    // of another make that refused the head. Never leave the key held.
    await recorder.fail(error);
    throw error;
  }
  if (!final) {
    await recorder.fail(error);
    throw error;
  }
  return recorder.recordResponse(failure, signal);
}
