/**
 * Which outcomes of an attempt are worth another attempt with the same key, and how long to
 * wait before it.
 */

/** Statuses retried by default: timeout, in progress, too early, rate limited, server errors. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 409 || status === 425 || status === 429 || status >= 500;
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

const DELTA_SECONDS = /^\s*(\d+)\s*$/;

/**
 * Parses a `Retry-After` value (RFC 9110 section 10.2.3): delay-seconds or an HTTP date.
 * Returns the wait in ms (0 for a date in the past), or `undefined` when the value is absent or
 * malformed.
 */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const seconds = DELTA_SECONDS.exec(value);
  if (seconds) return Number(seconds[1]) * 1000;
  // An HTTP date always names the weekday and GMT; refuse bare numbers Date.parse would take.
  if (!/[a-z]/i.test(value)) return undefined;
  const at = Date.parse(value);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
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
  const ceiling = Math.min(
    settings.maxDelayMs,
    settings.initialDelayMs * 2 ** Math.max(0, retry - 1),
  );
  const r = Math.min(1, Math.max(0, settings.random()));
  return Math.floor(r * ceiling);
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
