import { deriveKey, generateKey, validateKey } from '@idem/core';
import { IdemClientError } from './errors.js';
import { formatKeyHeader, parseKeyHeader } from './key-header.js';
import {
  bodyBytes,
  type PreparedRequest,
  prepareRequest,
  type ReplayableBody,
} from './request-body.js';
import {
  abortableSleep,
  backoffDelay,
  IDEMPOTENT_METHODS,
  isRetryableStatus,
  parseRetryAfter,
} from './retry-policy.js';

/** `fetch`'s signature, as the openai and Anthropic SDKs accept it. */
export type FetchFunction = (
  input: string | URL | Request,
  init?: RequestInit,
) => Promise<Response>;

/** What a custom key function sees of the request. */
export interface KeyRequest {
  method: string;
  url: string;
  headers: Headers;
  /** The body as it will be sent on every attempt (one-shot streams already buffered). */
  body: ReplayableBody | undefined;
}

/**
 * How a call gets its key when the caller did not set the key header:
 * - `'random'`: a fresh UUID per logical call;
 * - `'content'`: derived from method, URL and body bytes with `deriveKey` from `@idem/core`,
 *   so the same request made again (even by a restarted process) carries the same key;
 * - a function returning the key (it MUST return the same key for the same logical call).
 */
export type KeyStrategy =
  | 'random'
  | 'content'
  | ((request: KeyRequest) => string | Promise<string>);

/** Why an attempt did not produce a final answer. */
export type AttemptFailure = 'network' | 'timeout' | 'status';

/** Reported to `onAttempt` after every attempt, once the client has decided what follows. */
export interface AttemptEvent {
  /** 1 for the first attempt. */
  attempt: number;
  method: string;
  url: string;
  /** The idempotency key sent, or `undefined` for a method that gets none. */
  key: string | undefined;
  /** HTTP status, when the attempt got a response. */
  status?: number;
  /** The error, when the attempt got no response. */
  error?: unknown;
  /** The response carried the replay marker. */
  replayed: boolean;
  /** Set when the attempt's outcome was retryable: network error, timeout or retryable status. */
  failure?: AttemptFailure;
  /** Another attempt follows. */
  willRetry: boolean;
  /** Wait before the next attempt, in ms, when one follows. */
  delayMs?: number;
  /** Duration of this attempt until its response headers or its error, in ms. */
  durationMs: number;
}

/** Options of {@link createIdempotentFetch}. Durations are milliseconds. */
export interface IdempotentFetchOptions {
  /** The fetch that sends each attempt. @default globalThis.fetch */
  fetch?: FetchFunction;
  /** Methods that get an idempotency key (and so are retried). @default ['POST', 'PATCH'] */
  methods?: readonly string[];
  /** Where a key comes from when the caller sent none. @default 'random' */
  key?: KeyStrategy;
  /** Request header that carries the key. @default 'Idempotency-Key' */
  headerName?: string;
  /**
   * How a generated key is written: `'sf-string'` as a Structured Field String (`"…"`) per
   * draft-ietf-httpapi-idempotency-key-header, or `'bare'` as Stripe clients send it. A key
   * header the caller set is sent unchanged.
   * @default 'sf-string'
   */
  keyFormat?: 'sf-string' | 'bare';
  /** Response header whose value `true` marks a replay. @default 'Idempotent-Replayed' */
  replayHeader?: string;
  /** Most attempts per logical call, the first included. @default 5 */
  maxAttempts?: number;
  /** Backoff ceiling of the first retry; it doubles each retry. @default 250 */
  initialDelayMs?: number;
  /** Cap of the backoff ceiling. @default 10_000 */
  maxDelayMs?: number;
  /** Cap applied to a server's `Retry-After`. @default 60_000 */
  maxRetryAfterMs?: number;
  /**
   * Limit of one attempt until its response headers arrive; past it the attempt is aborted
   * and retried. The body is not limited by it (use the caller's signal). @default undefined (none)
   */
  attemptTimeoutMs?: number;
  /**
   * Limit of the whole logical call, from the call until a response: no attempt runs and no wait
   * starts past it. @default undefined (none)
   */
  deadlineMs?: number;
  /** Which statuses are retried. @default 408, 409, 425, 429 and 5xx */
  isRetryableStatus?: (status: number) => boolean;
  /** Largest one-shot stream body buffered so that it can be resent. @default 10_485_760 (10 MiB) */
  maxBufferedBodyBytes?: number;
  /** Called after every attempt; an exception it throws is ignored. */
  onAttempt?: (event: AttemptEvent) => void;
  /** Waits between attempts (tests inject one). It SHOULD reject when `signal` aborts. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Random source of the jitter, in [0, 1). @default Math.random */
  random?: () => number;
  /** Clock, in epoch ms (also used to read `Retry-After` dates). @default Date.now */
  now?: () => number;
}

/** What {@link getIdempotencyInfo} tells about a response. */
export interface IdempotencyInfo {
  /** The key sent on every attempt, or `undefined` for a method that gets none. */
  key: string | undefined;
  /** Attempts it took, the first included. */
  attempts: number;
  /** The server replayed a recorded outcome (the replay marker header was `true`). */
  replayed: boolean;
}

const infos = new WeakMap<Response, IdempotencyInfo>();

/** The key, attempt count and replay flag of a response returned by an idempotent fetch. */
export function getIdempotencyInfo(response: Response): IdempotencyInfo | undefined {
  return infos.get(response);
}

function positive(name: string, value: number, allowZero = false): number {
  if (!(Number.isFinite(value) && (allowZero ? value >= 0 : value > 0))) {
    throw new RangeError(`${name} must be a ${allowZero ? 'non-negative' : 'positive'} number`);
  }
  return value;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

async function contentKey(request: PreparedRequest): Promise<string> {
  const bytes = await bodyBytes(request.body);
  let body: string | { base64: string };
  try {
    body = utf8.decode(bytes);
  } catch {
    body = { base64: Buffer.from(bytes).toString('base64') };
  }
  return deriveKey({ method: request.method, url: request.url, body });
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
  const baseFetch: FetchFunction =
    options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const methods = new Set((options.methods ?? ['POST', 'PATCH']).map((m) => m.toUpperCase()));
  const strategy = options.key ?? 'random';
  const headerName = options.headerName ?? 'Idempotency-Key';
  const keyFormat = options.keyFormat ?? 'sf-string';
  const replayHeader = options.replayHeader ?? 'Idempotent-Replayed';
  const maxAttempts = options.maxAttempts ?? 5;
  if (!(Number.isSafeInteger(maxAttempts) && maxAttempts >= 1)) {
    throw new RangeError('maxAttempts must be an integer of at least 1');
  }
  const backoff = {
    initialDelayMs: positive('initialDelayMs', options.initialDelayMs ?? 250, true),
    maxDelayMs: positive('maxDelayMs', options.maxDelayMs ?? 10_000, true),
    random: options.random ?? Math.random,
  };
  const maxRetryAfterMs = positive('maxRetryAfterMs', options.maxRetryAfterMs ?? 60_000, true);
  const attemptTimeoutMs =
    options.attemptTimeoutMs === undefined
      ? Number.POSITIVE_INFINITY
      : positive('attemptTimeoutMs', options.attemptTimeoutMs);
  const deadlineMs =
    options.deadlineMs === undefined ? undefined : positive('deadlineMs', options.deadlineMs);
  const retryableStatus = options.isRetryableStatus ?? isRetryableStatus;
  const maxBuffered = positive(
    'maxBufferedBodyBytes',
    options.maxBufferedBodyBytes ?? 10 * 1024 * 1024,
    true,
  );
  const sleep = options.sleep ?? abortableSleep;
  const now = options.now ?? Date.now;
  const report = (event: AttemptEvent) => {
    try {
      options.onAttempt?.(event);
    } catch {
      // A broken hook must not break a request.
    }
  };

  async function assignKey(request: PreparedRequest): Promise<string> {
    const existing = request.headers.get(headerName);
    if (existing !== null) return parseKeyHeader(existing);
    let key: string;
    if (strategy === 'random') key = generateKey();
    else if (strategy === 'content') key = await contentKey(request);
    else {
      key = await strategy({
        method: request.method,
        url: request.url,
        headers: request.headers,
        body: request.body,
      });
      validateKey(key);
    }
    request.headers.set(headerName, formatKeyHeader(key, keyFormat));
    return key;
  }

  return async function idempotentFetch(input, init) {
    const startedAt = now();
    const deadline = deadlineMs === undefined ? Number.POSITIVE_INFINITY : startedAt + deadlineMs;
    const request = await prepareRequest(input, init, maxBuffered);
    const callerSignal = request.signal;
    callerSignal?.throwIfAborted();
    const keyed = methods.has(request.method);
    const key = keyed ? await assignKey(request) : undefined;
    const retryable = keyed || IDEMPOTENT_METHODS.has(request.method);
    const allowed = retryable ? maxAttempts : 1;
    const { method, url } = request;

    for (let attempt = 1; ; attempt++) {
      const remaining = deadline - now();
      if (remaining <= 0) {
        throw new IdemClientError('DEADLINE_EXCEEDED', `The deadline of ${deadlineMs} ms passed`, {
          attempts: attempt - 1,
        });
      }
      const controller = new AbortController();
      const onCallerAbort = () => controller.abort(callerSignal?.reason);
      if (callerSignal) callerSignal.addEventListener('abort', onCallerAbort, { once: true });
      let expired: 'attempt' | 'deadline' | undefined;
      const limit = Math.min(attemptTimeoutMs, remaining);
      const timer = Number.isFinite(limit)
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
      let failure: AttemptFailure;
      if (response === undefined) {
        detach();
        if (callerSignal?.aborted) throw callerSignal.reason;
        failure = expired === 'attempt' ? 'timeout' : 'network';
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
        if (attempt >= allowed || now() + delayMs >= deadline) {
          report({ ...base, willRetry: false });
          const byDeadline = attempt < allowed;
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
        // Out of attempts or out of time: the caller gets the last response as it is.
        if (attempt >= allowed || now() + delayMs >= deadline) return finish(true);
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
