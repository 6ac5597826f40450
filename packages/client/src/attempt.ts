import { boundSignal, raceSignal } from './call-bounds.js';
import type { FetchFunction } from './fetch-options.js';
import type { PreparedRequest } from './request-body.js';

/** What one attempt ended with: a response, or the error it failed with. */
export interface AttemptResult {
  response?: Response;
  error?: unknown;
  /** Set when the attempt was aborted by a time limit: its own, or the call's deadline. */
  expired?: 'attempt' | 'deadline';
  /**
   * Set when the `fetch` option answered something that is not a Response (`error`, a
   * `TypeError`, says what): a programming error another attempt would repeat.
   */
  invalid?: true;
  durationMs: number;
}

/**
 * Sends one attempt of `request`, aborted when the caller's signal aborts or when
 * `min(attemptTimeoutMs, remainingMs)` passes before the response headers. The response's body
 * stays tied to the caller's signal (aborting it stops the reading) with no listener left on
 * that signal.
 */
export async function sendAttempt(
  request: PreparedRequest,
  baseFetch: FetchFunction,
  limits: { attemptTimeoutMs: number; remainingMs: number },
  now: () => number,
): Promise<AttemptResult> {
  const limit = Math.min(limits.attemptTimeoutMs, limits.remainingMs);
  const bound = boundSignal(request.signal, limit, 'The attempt');
  const startedAt = now();
  // The body (once there is one) is read with this attempt's signal: the caller's abort
  // reaches it for as long as the body is alive.
  let body: ReadableStream<Uint8Array> | null = null;
  try {
    const response: unknown = await untilAborted(
      baseFetch(request.url, {
        ...request.rest,
        method: request.method,
        headers: new Headers(request.headers),
        body: request.body as BodyInit | undefined,
        signal: bound.signal,
      }),
      bound.signal,
    );
    // A wrapper that forgot its `return` (undefined) was taken for a network error and sent
    // again maxAttempts times; a plain object threw a bare TypeError further on.
    if (!isResponseLike(response)) {
      const got =
        response === null
          ? 'null'
          : typeof response === 'object'
            ? 'an object that is not a Response'
            : typeof response;
      return {
        error: new TypeError(`The fetch option resolved to ${got}, not a Response`),
        invalid: true,
        durationMs: now() - startedAt,
      };
    }
    body = response.body;
    return { response, durationMs: now() - startedAt };
  } catch (error) {
    const expired = bound.expired()
      ? limit === limits.attemptTimeoutMs
        ? 'attempt'
        : 'deadline'
      : undefined;
    return { error, ...(expired ? { expired } : {}), durationMs: now() - startedAt };
  } finally {
    bound.dispose(body);
  }
}

/** A Response, or one of another realm or fetch library: a status and readable headers. */
function isResponseLike(value: unknown): value is Response {
  if (value instanceof Response) return true;
  const candidate = value as { status?: unknown; headers?: { get?: unknown } } | null;
  return (
    typeof candidate === 'object' &&
    candidate !== null &&
    typeof candidate.status === 'number' &&
    typeof candidate.headers?.get === 'function'
  );
}

/**
 * `call`, or the signal's reason once it aborts first: a `fetch` option that does not pass the
 * signal on (a wrapper that rebuilds the init) still ends at the attempt's limit, the deadline
 * or the caller's abort. A response that comes after has its body cancelled (its connection
 * freed); the request itself cannot be taken back.
 */
function untilAborted(call: Promise<Response>, signal: AbortSignal): Promise<Response> {
  return raceSignal(call, signal).catch((error: unknown) => {
    if (signal.aborted)
      call.then(
        (response) => response.body?.cancel().catch(() => {}),
        () => {},
      );
    throw error;
  });
}
