import { isThenable } from '@idem/core';
import { sendAttempt } from './attempt.js';
import { boundSignal, joinSignals, raceSignal } from './call-bounds.js';
import { IdemClientError } from './errors.js';
import {
  type AttemptEvent,
  type AttemptFailure,
  type FetchFunction,
  type IdempotencyInfo,
  type IdempotentFetchOptions,
  type ResolvedFetchOptions,
  resolveFetchOptions,
} from './fetch-options.js';
import {
  classifyConflict,
  FINAL_PROBLEM_TYPES,
  PROBLEM_READ_LIMIT_MS,
  peekProblem,
} from './in-progress.js';
import { checkSendable, type PreparedRequest, prepareRequest } from './request-body.js';
import { assignKey } from './request-key.js';
import { IDEMPOTENT_METHODS, parseRetryAfter, retryDelay } from './retry-policy.js';
import {
  EVENT_ID_ENCODING_HEADER,
  GENERATION_HEADER,
  isResumableStream,
  lastEventIdHeader,
  resumableResponse,
} from './stream-resume.js';

const infos = new WeakMap<Response, IdempotencyInfo>();

/** The key, attempt count and replay flag of a response returned by an idempotent fetch. */
export function getIdempotencyInfo(response: Response): IdempotencyInfo | undefined {
  return infos.get(response);
}

function callerSignalOf(
  input: string | URL | Request,
  init: RequestInit | undefined,
): AbortSignal | undefined {
  return init?.signal ?? (input instanceof Request ? input.signal : undefined) ?? undefined;
}

/**
 * Normalises the request and gives it its key, within the caller's signal and the deadline: a
 * one-shot body that never ends or a key function that never answers cannot hold the call.
 */
async function prepareCall(
  input: string | URL | Request,
  init: RequestInit | undefined,
  settings: ResolvedFetchOptions,
  callerSignal: AbortSignal | undefined,
  remainingMs: number,
): Promise<{ request: PreparedRequest; key: string | undefined }> {
  const setup = boundSignal(callerSignal, remainingMs, 'Preparing the request');
  try {
    const request = await raceSignal(
      prepareRequest(input, init, settings.maxBuffered, setup.signal),
      setup.signal,
    );
    if (settings.globalFetch) checkSendable(request);
    const keyed = settings.methods.has(request.method);
    const key = keyed ? await raceSignal(assignKey(request, settings), setup.signal) : undefined;
    return { request, key };
  } catch (error) {
    if (callerSignal?.aborted) throw callerSignal.reason;
    if (setup.expired()) {
      throw new IdemClientError(
        'DEADLINE_EXCEEDED',
        `The deadline of ${settings.deadlineMs} ms passed before the request could be sent`,
        { cause: error, attempts: 0 },
      );
    }
    throw error;
  } finally {
    setup.dispose();
  }
}

/**
 * A `fetch` that makes retries safe: each logical call of a keyed method gets one idempotency
 * key, sent unchanged on every attempt, and failed attempts are retried only when a retry can
 * help (network errors, timeouts, 408, 425, 429, 5xx, and the server's in-progress 409). Other
 * responses, 4xx included (an application's own 409 too), are returned at once, as is the last
 * response when attempts or time run out. A `422` and a replayed answer are never retried.
 *
 * @throws the caller's abort reason when its signal aborts (at once, even mid-wait or while a
 *   one-shot body is read); `IdemClientError` with `RETRIES_EXHAUSTED`, `DEADLINE_EXCEEDED`,
 *   `BODY_NOT_REPLAYABLE` or `KEY_NOT_DERIVABLE`; `InvalidKeyError` from `@idem/core` when a key
 *   function returns an invalid key.
 */
export function createIdempotentFetch(options: IdempotentFetchOptions = {}): FetchFunction {
  const settings = resolveFetchOptions(options);
  const {
    baseFetch,
    methods,
    replayHeader,
    maxAttempts,
    delays,
    inProgressWaitMs,
    maxInProgressAttempts,
    isInProgress,
    attemptTimeoutMs,
    deadlineMs,
    retryableStatus,
    sleep,
    now,
  } = settings;
  const { onAttempt } = settings;
  const report = (event: AttemptEvent) => {
    if (onAttempt === undefined) return;
    try {
      // An async hook (assignable to `(event) => void`) may reject: never an unhandled rejection.
      const returned: unknown = onAttempt(event);
      if (isThenable(returned)) Promise.resolve(returned).catch(() => {});
    } catch {
      // A broken hook must not break a request.
    }
  };

  // A keyed event stream from an idem server (it names its generation) resumes where it
  // broke; a resume call itself (it carries Last-Event-ID) is not wrapped again.
  const resumable = (request: PreparedRequest, response: Response): Response => {
    if (
      settings.maxResumes === 0 ||
      request.headers.has('last-event-id') ||
      !response.headers.has(GENERATION_HEADER) ||
      !isResumableStream(response)
    )
      return response;
    return resumableResponse(
      response,
      async (lastEventId, generation, cancelled) => {
        const headers = new Headers(request.headers);
        // Empty when no event had an id yet: the stream from its start. UTF-8, as EventSource
        // sends it (a header value is bytes: an id past Latin-1 could not be set as it is).
        const value = lastEventIdHeader(lastEventId ?? '');
        headers.set('last-event-id', value);
        // Marked as UTF-8 past ASCII: unmarked, the same bytes may also be an older client's
        // Latin-1 id, and a stream holding both ids is not resumed (`@idem/http`).
        if (value !== (lastEventId ?? '')) headers.set(EVENT_ID_ENCODING_HEADER, 'utf-8');
        else headers.delete(EVENT_ID_ENCODING_HEADER);
        if (generation !== null) headers.set(GENERATION_HEADER, generation);
        // The caller's abort and the body's cancel both end the resume.
        const joined = joinSignals(request.signal, cancelled);
        let body: ReadableStream<Uint8Array> | null = null;
        try {
          const answer = await idempotentFetch(request.url, {
            ...request.rest,
            method: request.method,
            headers,
            ...(request.body === undefined ? {} : { body: request.body as BodyInit }),
            signal: joined.signal,
          });
          body = answer.body;
          return answer;
        } finally {
          // The caller's abort reaches the resumed body for as long as it is alive.
          joined.dispose(body);
        }
      },
      settings.maxResumes,
      request.signal,
    );
  };

  return idempotentFetch;
  async function idempotentFetch(
    input: string | URL | Request,
    init?: RequestInit,
  ): Promise<Response> {
    const callerSignal = callerSignalOf(input, init);
    callerSignal?.throwIfAborted();
    const startedAt = now();
    const deadline = deadlineMs === undefined ? Number.POSITIVE_INFINITY : startedAt + deadlineMs;
    const { request, key } = await prepareCall(
      input,
      init,
      settings,
      callerSignal,
      deadline - now(),
    );
    const retryable = methods.has(request.method) || IDEMPOTENT_METHODS.has(request.method);
    const allowed = retryable ? maxAttempts : 1;
    const { method, url } = request;

    let lastError: unknown;
    // Retries that use up maxAttempts: all but the in-progress answers of a keyed call, which
    // are bounded by maxInProgressAttempts and inProgressWaitMs instead.
    let counted = 0;
    let inProgressAnswers = 0;
    let inProgressSince: number | undefined;

    for (let attempt = 1; ; attempt++) {
      const remaining = deadline - now();
      if (remaining <= 0) {
        throw new IdemClientError('DEADLINE_EXCEEDED', `The deadline of ${deadlineMs} ms passed`, {
          cause: lastError,
          attempts: attempt - 1,
          key,
        });
      }
      const sent = await sendAttempt(
        request,
        baseFetch,
        { attemptTimeoutMs, remainingMs: remaining },
        now,
      );
      const { error, expired, durationMs } = sent;

      let delayMs: number;
      if (sent.invalid) {
        // Not retried: the same fetch would answer the same (and may have sent the request).
        report({ attempt, method, url, key, error, replayed: false, willRetry: false, durationMs });
        throw new IdemClientError(
          'INVALID_INPUT',
          `${(error as Error).message} (a wrapper without its return?); not retried`,
          { cause: error, attempts: attempt, key },
        );
      }
      if (sent.response === undefined) {
        lastError = error;
        if (callerSignal?.aborted) {
          // Reported too: the key it carried is what a later retry of this call must send
          // (the server may be running it), and the abort reason does not carry it.
          const reason: unknown = callerSignal.reason;
          report({
            attempt,
            method,
            url,
            key,
            error: reason,
            replayed: false,
            willRetry: false,
            durationMs,
          });
          throw reason;
        }
        const failure: AttemptFailure = expired === 'attempt' ? 'timeout' : 'network';
        const base = { attempt, method, url, key, error, replayed: false, failure, durationMs };
        if (expired === 'deadline') {
          report({ ...base, willRetry: false });
          throw new IdemClientError(
            'DEADLINE_EXCEEDED',
            `The deadline of ${deadlineMs} ms passed during attempt ${attempt}`,
            { cause: error, attempts: attempt, key },
          );
        }
        if (!retryable) {
          report({ ...base, willRetry: false });
          throw error;
        }
        counted++;
        delayMs = retryDelay(counted, undefined, delays);
        if (counted >= allowed || now() + delayMs >= deadline) {
          report({ ...base, willRetry: false });
          const byDeadline = counted < allowed;
          throw new IdemClientError(
            byDeadline ? 'DEADLINE_EXCEEDED' : 'RETRIES_EXHAUSTED',
            byDeadline
              ? `No time is left before the deadline of ${deadlineMs} ms for attempt ${attempt + 1}`
              : `All ${allowed} attempts failed without a response`,
            { cause: error, attempts: attempt, key },
          );
        }
        report({ ...base, willRetry: true, delayMs });
      } else {
        // Replaced by a copy when a 409's problem body was read (the copy's body is whole).
        let response: Response = sent.response;
        const replayed = response.headers.get(replayHeader)?.trim().toLowerCase() === 'true';
        const status = response.status;
        const base = { attempt, method, url, key, status, replayed, durationMs };
        // The caller's abort while a problem body is read ends the call: reported with the key.
        const abortedWhileReading = (error: unknown): unknown => {
          if (callerSignal?.aborted) {
            report({ ...base, error: callerSignal.reason, willRetry: false });
            return callerSignal.reason;
          }
          return error;
        };
        const finish = (failure?: AttemptFailure) => {
          report({ ...base, ...(failure ? { failure } : {}), willRetry: false });
          if (failure === undefined && key !== undefined) response = resumable(request, response);
          infos.set(response, { key, attempts: attempt, replayed });
          return response;
        };
        // The caller's hook, asked for this status: one that throws ends the call with its
        // error, and the body nobody will read is let go (its connection freed).
        const statusRetryable = (): boolean => {
          try {
            return retryableStatus(status);
          } catch (error) {
            response.body?.cancel().catch(() => undefined);
            throw error;
          }
        };
        // A replay is the recorded outcome and a 422 says the key is taken by another request:
        // the same key would get the same answer again.
        if (!retryable || replayed || status === 422) return finish();
        let failure: AttemptFailure | undefined;
        if (key !== undefined && status === 409) {
          const conflict = await classifyConflict(response, {
            callerSignal,
            limitMs: Math.min(PROBLEM_READ_LIMIT_MS, attemptTimeoutMs, deadline - now()),
            isInProgress,
          }).catch((error: unknown) => {
            throw abortedWhileReading(error);
          });
          response = conflict.response;
          if (conflict.inProgress) failure = 'in-progress';
        } else if (key !== undefined && status === 500 && statusRetryable()) {
          // An idem server's "ran, but not recorded" (or misconfigured scope) 500 is final.
          const read = boundSignal(
            callerSignal,
            Math.min(PROBLEM_READ_LIMIT_MS, attemptTimeoutMs, deadline - now()),
            'Reading the problem body',
          );
          let peeked: Awaited<ReturnType<typeof peekProblem>>;
          try {
            peeked = await peekProblem(response, read.signal);
          } finally {
            read.dispose();
          }
          response = peeked.response;
          if (callerSignal?.aborted) {
            // Nobody will read this body: let the connection go.
            response.body?.cancel().catch(() => undefined);
            throw abortedWhileReading(undefined);
          }
          if (peeked.problemType !== undefined && FINAL_PROBLEM_TYPES.has(peeked.problemType)) {
            return finish();
          }
        }
        if (failure === undefined && statusRetryable()) failure = 'status';
        if (failure === undefined) return finish();
        const retryAfter = parseRetryAfter(response.headers.get('retry-after'), now());
        let spent: boolean;
        if (failure === 'in-progress') {
          inProgressAnswers++;
          inProgressSince ??= now();
          delayMs = retryDelay(inProgressAnswers, retryAfter, delays);
          spent =
            inProgressAnswers >= maxInProgressAttempts ||
            now() + delayMs - inProgressSince > inProgressWaitMs;
        } else {
          counted++;
          delayMs = retryDelay(counted, retryAfter, delays);
          spent = counted >= allowed;
        }
        // Out of attempts or out of time: the caller gets the last response as it is.
        if (spent || now() + delayMs >= deadline) return finish(failure);
        report({ ...base, failure, willRetry: true, delayMs });
        // Not awaited: a body that never ends must not hold the call.
        response.body?.cancel().catch(() => undefined);
      }

      if (callerSignal) await raceSignal(sleep(delayMs, callerSignal), callerSignal);
      else await sleep(delayMs);
    }
  }
}
