import { BodyTooLargeError, PROBLEM_TYPES, problemResponse, readBodyLimited } from '@idem/http';
import type { MiddlewareHandler } from 'hono';
import { errorResponse } from './errors.js';

/** Largest request body the model endpoints read, in bytes (as `@idem/http`'s default). */
export const MAX_BODY_BYTES = 1_048_576;

/** Deepest nesting of arrays and objects a request body may have (the API needs 4). */
export const MAX_JSON_DEPTH = 64;

/**
 * How deep arrays and objects nest in `bytes` read as JSON text, in one pass without
 * recursion (strings skipped, escapes included). Not a validation: bytes that are not JSON
 * still get a number, and the handler refuses them.
 */
export function jsonDepth(bytes: Uint8Array): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i];
    if (inString) {
      if (byte === 0x5c) i++;
      else if (byte === 0x22) inString = false;
    } else if (byte === 0x22) {
      inString = true;
    } else if (byte === 0x5b || byte === 0x7b) {
      depth++;
      if (depth > deepest) deepest = depth;
    } else if (byte === 0x5d || byte === 0x7d) {
      depth--;
    }
  }
  return deepest;
}

const tooLarge = () =>
  problemResponse({
    type: PROBLEM_TYPES.bodyTooLarge,
    title: 'Request body too large',
    status: 413,
    detail: `The request body exceeds ${MAX_BODY_BYTES} bytes`,
  });

/**
 * Runs before everything else on the model endpoints, keyed or not, and hands on a request
 * whose body is in memory:
 * - a body over {@link MAX_BODY_BYTES} gets 413 (problem+json) without being read further,
 *   whether it declares its length or comes chunked. Without this, a request without a key
 *   was read whole (one 200 MB body cost 1.2 GB of RSS), and a chunked keyed body over the
 *   limit was never answered: `@idem/http` reads a clone of the body, and cancelling one
 *   branch of a tee waits for the other branch, which nobody reads;
 * - JSON nested deeper than {@link MAX_JSON_DEPTH} gets 400: fingerprinting it recursed
 *   until the stack overflowed, a 500.
 * Neither answer is recorded: the idempotency layer never sees the request.
 */
export function requestGuard(): MiddlewareHandler {
  return async (c, next) => {
    const raw = c.req.raw;
    if (raw.body === null) return next();
    const declared = raw.headers.get('content-length');
    if (declared !== null && Number(declared) > MAX_BODY_BYTES) return tooLarge();
    let bytes: Uint8Array;
    try {
      // The request's own stream, not a tee branch: leaving it past the limit cancels it.
      bytes = await readBodyLimited(raw.body, MAX_BODY_BYTES);
    } catch (error) {
      if (error instanceof BodyTooLargeError) return tooLarge();
      throw error;
    }
    if (jsonDepth(bytes) > MAX_JSON_DEPTH) {
      return errorResponse(
        400,
        'invalid_request_error',
        `The body nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels`,
      );
    }
    const headers = new Headers(raw.headers);
    headers.delete('transfer-encoding');
    headers.set('content-length', String(bytes.byteLength));
    // The same request with its body in memory; the signal still tells when the client left.
    c.req.raw = new Request(raw.url, {
      method: raw.method,
      headers,
      body: bytes as Uint8Array<ArrayBuffer>,
      signal: raw.signal,
    });
    return next();
  };
}
