import { isIdemError } from '@idem/core';
import { PROBLEM_TYPES, problemResponse } from '@idem/http';
import { StaleFenceError } from '../ledger/ledger.js';
import { ModelError } from '../model/model.js';

/** An OpenAI-style error answer: `{ error: { message, type, code } }`. */
export function errorResponse(
  status: number,
  type: string,
  message: string,
  headers?: Record<string, string>,
): Response {
  return Response.json({ error: { message, type, code: null, param: null } }, { status, headers });
}

/** Thrown by handlers for a bad request body; answered with 400. */
export class BadRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BadRequestError';
  }
}

/** `Retry-After` (seconds) of every 503 the app sends for a store failure. */
export const STORE_RETRY_AFTER_SECONDS = 1;

/**
 * The answer for a store failure or a lost lease, wherever it happened (ledger, counters,
 * usage, recording an outcome), or undefined for any other error:
 * - the store failed or timed out (`STORE_UNAVAILABLE`): 503 + `Retry-After`,
 *   `application/problem+json` with @idem/http's `store-unavailable` type, as @idem/http
 *   answers when the idempotency store is down. Retry with the same key.
 * - the store is full (`STORE_FULL`, the memory store's budget taken by live records): the
 *   same with the `store-full` type.
 * - the lease on the key was lost (`LEASE_LOST`, or a bill refused for a stale fence):
 *   another execution took the request over. 409 `lease_lost` + `Retry-After`: a retry with
 *   the same key gets 409 while that execution runs, then its answer.
 */
export function storeFailureResponse(error: unknown): Response | undefined {
  if (isIdemError(error, 'STORE_FULL')) {
    return problemResponse(
      {
        type: PROBLEM_TYPES.storeFull,
        title: 'Store full',
        status: 503,
        detail:
          'The store has no room for a new record until older ones expire; retry later with the same key',
      },
      { 'retry-after': String(STORE_RETRY_AFTER_SECONDS) },
    );
  }
  if (isIdemError(error, 'STORE_UNAVAILABLE')) {
    return problemResponse(
      {
        type: PROBLEM_TYPES.storeUnavailable,
        title: 'Store unavailable',
        status: 503,
        detail: 'The store did not answer in time; retry later with the same key',
      },
      { 'retry-after': String(STORE_RETRY_AFTER_SECONDS) },
    );
  }
  if (error instanceof StaleFenceError || isIdemError(error, 'LEASE_LOST')) {
    return errorResponse(409, 'lease_lost', (error as Error).message, { 'retry-after': '1' });
  }
  return undefined;
}

/** The answer for an error a handler raised. None of these is recorded (not 2xx). */
export function responseForError(error: unknown): Response {
  if (error instanceof BadRequestError)
    return errorResponse(400, 'invalid_request_error', error.message);
  if (error instanceof ModelError) {
    return errorResponse(
      error.status,
      error.status === 502 ? 'upstream_error' : 'server_error',
      error.message,
    );
  }
  const storeFailure = storeFailureResponse(error);
  if (storeFailure) return storeFailure;
  console.error('[llm-api] unexpected error', error);
  return errorResponse(500, 'server_error', 'Internal server error');
}

/** Reads a JSON object body or throws {@link BadRequestError}. */
export async function readJsonObject(request: Request): Promise<Record<string, unknown>> {
  let value: unknown;
  try {
    value = await request.json();
  } catch {
    throw new BadRequestError('The body must be JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new BadRequestError('The body must be a JSON object');
  }
  return value as Record<string, unknown>;
}

/** Longest model name accepted (OpenAI's are under 64 characters). */
export const MAX_MODEL_LENGTH = 256;

/**
 * The request's `model`, or {@link BadRequestError}. Its length is bounded because every
 * answer echoes it, every streamed chunk included, and the answer is recorded: a 900 KB name
 * made a 17 MB recorded stream, and the ledger keeps it with every bill.
 */
export function modelName(value: unknown): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_MODEL_LENGTH) {
    throw new BadRequestError(
      `\`model\` must be a non-empty string of at most ${MAX_MODEL_LENGTH} characters`,
    );
  }
  return value;
}
