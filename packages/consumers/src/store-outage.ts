import { setTimeout as sleep } from 'node:timers/promises';

/** What one try at a message gave, and whether it met a store outage before its handler ran. */
export interface Attempt<D> {
  disposition: D;
  /** The store did not answer the acquisition (`STORE_UNAVAILABLE`); the handler did not run. */
  outage: boolean;
}

/** How long a message may wait in its consumer for the store to come back. */
export interface OutageBounds {
  /** `performance.now()` past which it is given back (the broker helper's hold limit). */
  untilMs: number;
  /** Aborted when the consumer stops: the message is given back at once. */
  signal?: AbortSignal | undefined;
  /**
   * Registers `wake`, called when the processor is closed (at once if it is already); answers
   * what stops listening. The wait ends then too, as at the signal's abort: without a signal
   * (the generic messageProcessor), a close() left the message held until its next try,
   * `retryDelayMs` later (test/consrev3-closed-outage.test.ts).
   */
  onClose?: (wake: () => void) => () => void;
}

/**
 * Tries the message again, in its consumer, while the store is out and its handler has not
 * run, every `delayMs`, until it gets an answer, `bounds` end or the consumer stops; answers
 * the last try. Each give-back spends a delivery of the broker's bound (JetStream
 * `max_deliver`, a quorum queue's `delivery-limit`, both what the README recommends against
 * poison messages): given back at every `storeTimeoutMs + retryDelayMs`, a message met a
 * Redis failover longer than a few of them and was dropped, never processed. Waiting here
 * spends none, and a redelivery would meet the same outage. The wait does not keep the
 * process alive.
 */
export async function acrossStoreOutage<D>(
  attempt: () => Promise<Attempt<D>>,
  delayMs: number,
  bounds: OutageBounds,
): Promise<D> {
  // A store that refuses at once (connection refused) must not make a busy loop.
  const wait = Math.max(delayMs, 50);
  for (;;) {
    const { disposition, outage } = await attempt();
    if (!outage || bounds.signal?.aborted || performance.now() + wait >= bounds.untilMs)
      return disposition;
    // Only while waiting (a store outage, rare): a signal of its own, aborted by either.
    const waking = new AbortController();
    const wake = () => waking.abort();
    bounds.signal?.addEventListener('abort', wake, { once: true });
    const unlisten = bounds.onClose?.(wake);
    try {
      if (bounds.signal?.aborted) wake();
      await sleep(wait, undefined, { signal: waking.signal, ref: false });
    } catch {
      return disposition; // the consumer stops: given back now
    } finally {
      bounds.signal?.removeEventListener('abort', wake);
      unlisten?.();
    }
  }
}
