import type { Clock } from './clock.js';
import { StoreUnavailableError } from './errors.js';
import type { StoreOperation } from './events.js';
import type { StoreCallContext } from './store.js';
import { callStore, callStoreSync } from './store-call.js';

/** A pause that does not keep the process alive (`unref` where timers have it: Node, Bun). */
function unrefSleep(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    (timer as { unref?: () => void }).unref?.();
  });
}

/** First pause between attempts; it doubles up to {@link MAX_RETRY_DELAY_MS}, jittered. */
const FIRST_RETRY_DELAY_MS = 50;
const MAX_RETRY_DELAY_MS = 1_000;

/** How {@link retryStoreCall} retries. */
export interface StoreRetryOptions {
  operation: StoreOperation;
  /** Time limit of each attempt, in ms. */
  timeoutMs: number;
  clock: Clock;
  /** No attempt starts at or after this instant (epoch ms by `clock`). */
  deadline: number;
  /**
   * Called with each failure that will be retried or ends the retries at the deadline, and
   * how long that attempt took in ms (measured when `observe` is given, else 0).
   */
  onError?(error: StoreUnavailableError, durationMs: number): void;
  /**
   * Longest pause between two attempts, in ms (at most 1 s). A write racing a lease passes
   * a fraction of the lease, so a store that comes back is tried again well before it ends.
   * @default 1_000
   */
  maxDelayMs?: number;
  /** Told after each attempt whether it answered and how long it took (see `callStore`). */
  observe?: (ok: boolean, durationMs: number) => void;
}

/**
 * Runs one store call until it answers: a `StoreUnavailableError` (timeout, connection) is
 * retried after 50 ms, doubling to 1 s (or `maxDelayMs`), each pause jittered down by up to half, on unref'd
 * timers, for as long as the deadline allows; then the last one is thrown. Any other error
 * is thrown at once. The call MUST be safe to repeat (owner-checked, same owner and bytes:
 * a redelivered write is recognised by the store).
 */
export async function retryStoreCall<T>(
  options: StoreRetryOptions,
  call: (context: StoreCallContext) => Promise<T>,
  /** The same call answered at once (the store method's synchronous form), made untimed. */
  syncCall?: () => T,
): Promise<T> {
  const { operation, timeoutMs, clock, deadline } = options;
  const maxDelay = Math.max(
    1,
    Math.min(options.maxDelayMs ?? MAX_RETRY_DELAY_MS, MAX_RETRY_DELAY_MS),
  );
  let pause = Math.min(FIRST_RETRY_DELAY_MS, maxDelay);
  for (;;) {
    // Timed only for an observer: an unobserved retry reads no extra clock.
    const attemptStartedAt = options.observe ? performance.now() : 0;
    try {
      // Background work must not keep a process alive; a caller waiting holds its own timer.
      if (syncCall) {
        const answer = callStoreSync(
          operation,
          syncCall,
          undefined,
          options.observe,
          timeoutMs,
          true,
        );
        return answer instanceof Promise ? await answer : answer;
      }
      return await callStore(operation, timeoutMs, call, { unref: true, observe: options.observe });
    } catch (error) {
      if (!(error instanceof StoreUnavailableError)) throw error;
      options.onError?.(error, options.observe ? performance.now() - attemptStartedAt : 0);
      const left = deadline - clock.now();
      if (left <= 0) throw error;
      const wait = Math.min(left, pause * (0.5 + Math.random() * 0.5));
      await unrefSleep(wait);
      if (clock.now() >= deadline) throw error;
      pause = Math.min(pause * 2, maxDelay);
    }
  }
}
