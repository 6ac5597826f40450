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
  if (error instanceof StaleFenceError)
    return errorResponse(409, 'lease_lost', error.message, { 'retry-after': '1' });
  if (error instanceof Error && error.name === 'LeaseLostError') {
    return errorResponse(409, 'lease_lost', error.message, { 'retry-after': '1' });
  }
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
