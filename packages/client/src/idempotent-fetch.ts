import { IdemClientError } from './errors.js';
import {
  type AttemptEvent,
  type AttemptFailure,
  type FetchFunction,
  type IdempotencyInfo,
  type IdempotentFetchOptions,
  resolveFetchOptions,
} from './fetch-options.js';
import { prepareRequest } from './request-body.js';
import { assignKey } from './request-key.js';
import { backoffDelay, IDEMPOTENT_METHODS, parseRetryAfter } from './retry-policy.js';

const MAX_TIMER_MS = 2_147_483_647;

const infos = new WeakMap<Response, IdempotencyInfo>();

/** The key, attempt count and replay flag of a response returned by an idempotent fetch. */
export function getIdempotencyInfo(response: Response): IdempotencyInfo | undefined {
  return infos.get(response);
}

function abortPromise(signal: AbortSignal | undefined): {
  promise: Promise<never>;
  dispose: () => void;
} {
  if (!signal) return { promise: new Promise<never>(() => undefined), dispose: () => undefined };
  let onAbort: () => void = () => undefined;
  const promise = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  return { promise, dispose: () => signal.removeEventListener('abort', onAbort) };
}

/**
 * A `fetch` that makes retries safe: each logical call of a keyed method gets one idempotency
 * key, sent unchanged on every attempt, and failed attempts are retried only when a retry can
 * help (network errors, timeouts, 408, 409, 425, 429, 5xx). Other responses, 4xx included, are
 * returned at once, as is the last response when attempts or time run out.
 *
 * @throws the caller's abort reason when its signal aborts (at once, even mid-wait);
 *   `IdemClientError` with `RETRIES_EXHAUSTED`, `DEADLINE_EXCEEDED`, `BODY_NOT_REPLAYABLE` or
 *   `KEY_NOT_DERIVABLE`; `InvalidKeyError` from `@idem/core` when a key function returns an
 *   invalid key.
 */
export function createIdempotentFetch(options: IdempotentFetchOptions = {}): FetchFunction {
  const settings = resolveFetchOptions(options);
  const {
    baseFetch,
    methods,
    replayHeader,
    maxAttempts,
    backoff,
    maxRetryAfterMs,
    inProgressWaitMs,
    attemptTimeoutMs,
    deadlineMs,
    retryableStatus,
    maxBuffered,
    sleep,
    now,
  } = settings;
  const report = (event: AttemptEvent) => {
    try {
      options.onAttempt?.(event);
    } catch {
      // A broken hook must not break a request.
    }
  };

  return async function idempotentFetch(input, init) {
    const startedAt = now();
    const deadline = deadlineMs === undefined ? Number.POSITIVE_INFINITY : startedAt + deadlineMs;
    const request = await prepareRequest(input, init, maxBuffered);
    const callerSignal = request.signal;
    callerSignal?.throwIfAborted();
    const keyed = methods.has(request.method);
    const key = keyed ? await assignKey(request, settings) : undefined;
    const retryable = keyed || IDEMPOTENT_METHODS.has(request.method);
    const allowed = retryable ? maxAttempts : 1;
    const { method, url } = request;
    let lastError: unknown;
    // Attempts that use up maxAttempts: all but the 409s of a keyed call, which are bounded
    // by inProgressWaitMs instead.
    let counted = 0;
    let inProgressSince: number | undefined;

    for (let attempt = 1; ; attempt++) {
      const remaining = deadline - now();
      if (remaining <= 0) {
        throw new IdemClientError('DEADLINE_EXCEEDED', `The deadline of ${deadlineMs} ms passed`, {
          cause: lastError,
          attempts: attempt - 1,
        });
      }
      const controller = new AbortController();
      const onCallerAbort = () => controller.abort(callerSignal?.reason);
      if (callerSignal) callerSignal.addEventListener('abort', onCallerAbort, { once: true });
      let expired: 'attempt' | 'deadline' | undefined;
      const limit = Math.min(attemptTimeoutMs, remaining);
      // setTimeout cannot wait past 2^31 - 1 ms; a limit that far away is no limit in practice.
      const timer =
        limit <= MAX_TIMER_MS
          ? setTimeout(() => {
              expired = limit === attemptTimeoutMs ? 'attempt' : 'deadline';
              controller.abort(
                new DOMException(`The attempt timed out after ${limit} ms`, 'TimeoutError'),
              );
            }, limit)
          : undefined;
      const attemptStartedAt = now();
      let response: Response | undefined;
      let error: unknown;
      try {
        response = await baseFetch(url, {
          ...request.rest,
          method,
          headers: new Headers(request.headers),
          body: request.body as BodyInit | undefined,
          signal: controller.signal,
        });
      } catch (caught) {
        error = caught;
      } finally {
        clearTimeout(timer);
      }
      const durationMs = now() - attemptStartedAt;
      const detach = () => callerSignal?.removeEventListener('abort', onCallerAbort);

      let delayMs: number;
      if (response === undefined) {
        detach();
        lastError = error;
        if (callerSignal?.aborted) throw callerSignal.reason;
        const failure: AttemptFailure = expired === 'attempt' ? 'timeout' : 'network';
        const base = { attempt, method, url, key, error, replayed: false, failure, durationMs };
        if (expired === 'deadline') {
          report({ ...base, willRetry: false });
          throw new IdemClientError(
            'DEADLINE_EXCEEDED',
            `The deadline of ${deadlineMs} ms passed during attempt ${attempt}`,
            {
              cause: error,
              attempts: attempt,
            },
          );
        }
        if (!retryable) {
          report({ ...base, willRetry: false });
          throw error;
        }
        delayMs = backoffDelay(attempt, backoff);
        counted++;
        if (counted >= allowed || now() + delayMs >= deadline) {
          report({ ...base, willRetry: false });
          const byDeadline = counted < allowed;
          throw new IdemClientError(
            byDeadline ? 'DEADLINE_EXCEEDED' : 'RETRIES_EXHAUSTED',
            byDeadline
              ? `No time is left before the deadline of ${deadlineMs} ms for attempt ${attempt + 1}`
              : `All ${allowed} attempts failed without a response`,
            { cause: error, attempts: attempt },
          );
        }
        report({ ...base, willRetry: true, delayMs });
      } else {
        const replayed = response.headers.get(replayHeader)?.trim().toLowerCase() === 'true';
        const status = response.status;
        const base = { attempt, method, url, key, status, replayed, durationMs };
        const finish = (failed: boolean) => {
          report({ ...base, ...(failed ? { failure: 'status' as const } : {}), willRetry: false });
          infos.set(response, { key, attempts: attempt, replayed });
          return response;
        };
        if (!retryable || !retryableStatus(status)) return finish(false);
        const retryAfter = parseRetryAfter(response.headers.get('retry-after'), now());
        delayMs =
          retryAfter === undefined
            ? backoffDelay(attempt, backoff)
            : Math.min(retryAfter, maxRetryAfterMs);
        const inProgress = key !== undefined && status === 409;
        let spent: boolean;
        if (inProgress) {
          inProgressSince ??= now();
          spent = now() + delayMs - inProgressSince > inProgressWaitMs;
        } else {
          counted++;
          spent = counted >= allowed;
        }
        // Out of attempts or out of time: the caller gets the last response as it is.
        if (spent || now() + delayMs >= deadline) return finish(true);
        detach();
        report({ ...base, failure: 'status', willRetry: true, delayMs });
        await response.body?.cancel().catch(() => undefined);
      }

      const aborted = abortPromise(callerSignal);
      try {
        await Promise.race([sleep(delayMs, callerSignal), aborted.promise]);
      } finally {
        aborted.dispose();
      }
    }
  };
}
