/**
 * Which outcomes of an attempt are worth another attempt with the same key, and how long to
 * wait before it.
 */

import { parseHttpDate } from './http-date.js';

/**
 * Statuses retried by default: request timeout, too early, rate limited, server errors. A 409
 * is not among them: only the idempotency server's in-progress answer is waited on (see
 * `isInProgressAnswer`); an application's own 409 is final.
 */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 425 || status === 429 || status >= 500;
}

/** Methods that HTTP defines as idempotent; they are retried without a key. */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set([
  'GET',
  'HEAD',
  'OPTIONS',
  'TRACE',
  'PUT',
  'DELETE',
]);

const DELTA_SECONDS = /^\d+$/;

/**
 * Parses a `Retry-After` value (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date in one
 * of its three forms. Returns the wait in ms (0 for a date in the past; at most
 * `Number.MAX_SAFE_INTEGER`, so callers cap it), or `undefined` when the value is absent or
 * anything else (negative, fractional, several values, free text).
 */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (DELTA_SECONDS.test(trimmed)) {
    return Math.min(Number(trimmed) * 1000, Number.MAX_SAFE_INTEGER);
  }
  const at = parseHttpDate(trimmed, now);
  return at === undefined ? undefined : Math.max(0, at - now);
}

/** Settings of exponential backoff with full jitter. */
export interface BackoffSettings {
  initialDelayMs: number;
  maxDelayMs: number;
  random: () => number;
}

/**
 * Full jitter ("Exponential Backoff and Jitter", AWS Architecture Blog): a uniform random wait
 * between 0 and `min(maxDelayMs, initialDelayMs * 2 ** (retry - 1))`, where `retry` counts
 * from 1.
 */
export function backoffDelay(retry: number, settings: BackoffSettings): number {
  // 2 ** 1024 is Infinity, and 0 * Infinity is NaN (initialDelayMs 0 from retry 1025 on): the
  // exponent stops at 1023, whose power is finite, so the ceiling is a number whatever the retry.
  const ceiling = Math.min(
    settings.maxDelayMs,
    settings.initialDelayMs * 2 ** Math.min(1023, Math.max(0, retry - 1)),
  );
  return Math.floor(unit(settings.random) * ceiling);
}

function unit(random: () => number): number {
  const r = random();
  return Number.isFinite(r) ? Math.min(1, Math.max(0, r)) : 0;
}

/** Settings of {@link retryDelay}. */
export interface DelaySettings extends BackoffSettings {
  /** No wait is shorter, whatever the server or the jitter say. */
  minDelayMs: number;
  /** No wait that a `Retry-After` asks for is longer. */
  maxRetryAfterMs: number;
}

/** Share of a `Retry-After` added on top of it at most, so waiting callers do not come back together. */
export const RETRY_AFTER_JITTER = 0.2;

/**
 * The wait before retry number `retry` (from 1). A `Retry-After` of at least `minDelayMs` is
 * honoured, capped at `maxRetryAfterMs`, plus up to {@link RETRY_AFTER_JITTER} of it (jitter
 * only adds: never earlier than the server asked). Without one, or with one under the floor
 * (`Retry-After: 0`), exponential backoff with full jitter. Never under `minDelayMs`.
 */
export function retryDelay(
  retry: number,
  retryAfterMs: number | undefined,
  settings: DelaySettings,
): number {
  const { minDelayMs, maxRetryAfterMs } = settings;
  if (retryAfterMs !== undefined && retryAfterMs > 0 && retryAfterMs >= minDelayMs) {
    const asked = Math.min(retryAfterMs, maxRetryAfterMs);
    const jitter = Math.floor(unit(settings.random) * asked * RETRY_AFTER_JITTER);
    return Math.max(minDelayMs, Math.min(maxRetryAfterMs, asked + jitter));
  }
  return Math.max(minDelayMs, backoffDelay(retry, settings));
}

/**
 * Waits `ms`, or rejects with the signal's reason as soon as `signal` aborts (also when it has
 * already aborted).
 */
export function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(
      () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      },
      Math.min(ms, 2_147_483_647),
    );
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
