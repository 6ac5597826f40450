import { InProgressError, isIdemError, ReplayedFailureError } from '@idem/core';
import type { Disposition } from './message-outcome.js';

/** Node's longest timer (a longer one fires at once). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * When to deliver again a duplicate whose key is in progress elsewhere: once the holder's
 * lease has passed (`retryAfterMs`), plus jitter so that duplicates do not come back
 * together. Every give-back uses up a delivery (JetStream `max_deliver`, a quorum queue's
 * `delivery-limit`): coming back every `retryDelayMs` made a crashed holder's unrenewed
 * lease burn them all and the broker drop the message. A live holder renews its lease, so
 * its duplicate comes back about once a lease until the outcome is recorded (then replays).
 * Bounded by the longer of `leaseMs` and `retryDelayMs` (a holder with a longer lease is
 * asked about again then), plus the jitter.
 */
export function inProgressDelayMs(
  retryAfterMs: number,
  retryDelayMs: number,
  leaseMs: number,
  random: () => number = Math.random,
): number {
  // NaN (an unreadable lease deadline): as if the holder's lease were whole.
  const after = Number.isNaN(retryAfterMs) ? leaseMs : retryAfterMs;
  const base = Math.max(
    10,
    Math.min(after, Math.max(leaseMs, retryDelayMs), MAX_IN_PROGRESS_DELAY_MS),
  );
  const jitter = Math.floor(random() * Math.min(1_000, 10 + base / 10));
  return Math.min(base + jitter, MAX_TIMER_MS);
}

/**
 * The longest a duplicate in progress is held before it is given back: RabbitMQ closes a
 * channel whose delivery stays unacked past its `consumer_timeout` (30 min by default), so a
 * long lease must not keep it that long. A holder still in progress then is asked about again.
 */
const MAX_IN_PROGRESS_DELAY_MS = 10 * 60_000;

/** The engine's answers for an outcome it could not store: a marker stands for it. */
export const NOT_STORED: readonly string[] = ['OUTCOME_TOO_LARGE', 'OUTCOME_NOT_RECORDED'];

/** What an error of `execute` means for the message. */
export function classify(
  error: unknown,
  retryDelayMs: number,
  leaseMs: number,
  ranHere: boolean,
): Disposition {
  // A recorded failure (under a policy that records failures) is an outcome like any other.
  if (error instanceof ReplayedFailureError) return { action: 'ack', status: 'replayed' };
  // The handler ran once and its outcome could not be stored: a marker stands for it, and
  // running the handler again is what must never happen. `processed` for the delivery that
  // ran it; a duplicate answered by the marker did not run it: `replayed`.
  if (isIdemError(error) && NOT_STORED.includes(error.code))
    return { action: 'ack', status: ranHere ? 'processed' : 'replayed' };
  if (error instanceof InProgressError) {
    const delayMs = inProgressDelayMs(error.retryAfterMs, retryDelayMs, leaseMs);
    return { action: 'retry', status: 'in_progress', delayMs, error };
  }
  if (isIdemError(error) && ['MISMATCH', 'INVALID_KEY', 'NOT_CANONICAL'].includes(error.code))
    return { action: 'reject', status: 'rejected', error };
  // The handler's own error (key released), a lost lease, a store outage, an outcome whose
  // write has not landed yet: never acked; the redelivery replays or runs again.
  return { action: 'retry', status: 'failed', delayMs: retryDelayMs, error };
}
