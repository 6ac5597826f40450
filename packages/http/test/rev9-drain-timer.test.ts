/**
 * rev9: `drain(timeoutMs)` with a time limit past Node's longest timer. Real store
 * (store-memory, its complete made to hang), real timers.
 */
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { withIdempotency } from '../src/index.js';
import { post } from './web-requests.js';

describe('rev9: drain past 2^31 - 1 ms', () => {
  // FINDING (LOW): `drain(timeoutMs)` (core's `BackgroundTasks.drain`, reached through
  // `idem.drain`, `@idem/http`'s `drain`, every adapter's, and NestJS's `shutdownDrainMs`)
  // accepts any finite non-negative number, but arms `setTimeout(resolve, left)` with `left`
  // uncapped: past 2^31 - 1 ms (about 24.8 days; say `drain(Number.MAX_SAFE_INTEGER)` or 30
  // days for "wait for everything") Node fires it after 1 ms with a TimeoutOverflowWarning,
  // and the loop re-arms it at once: drain busy-polls every millisecond for as long as a
  // background write retries (up to `maxHoldMs`, an hour by default), printing a warning each
  // time and adding a `Promise.all` reaction to every pending task each turn (they pile up
  // until the task settles). Repro: a store whose complete hangs, one request (its outcome
  // retried in the background), `drain(2 ** 33)`: ~100+ warnings in 300 ms. Suggested fix:
  // cap the timer at 2^31 - 1 (re-armed when it fires early, as give-back's `settledWithin`
  // does), or reject a `timeoutMs` over it with INVALID_INPUT like the other durations.
  it('drain(2 ** 33) with a write retrying in the background: waits, no timer overflow', async () => {
    const store = createMemoryStore();
    store.complete = () => new Promise(() => {});
    const handler = withIdempotency(async () => new Response('ran'), {
      scope: 'global',
      store,
      leaseMs: 1_000,
      // The background write gives up after a second: the drain (and its polling) ends then.
      maxHoldMs: 1_000,
      storeTimeoutMs: 200,
      completionWaitMs: 50,
      onWarning: () => {},
    });
    const answer = await handler(post('k'));
    // The outcome is not recorded within completionWaitMs: it keeps retrying in the background.
    await answer.arrayBuffer().catch(() => {});
    let overflows = 0;
    const onWarning = (warning: Error) => {
      if (warning.name === 'TimeoutOverflowWarning') overflows++;
    };
    process.on('warning', onWarning);
    let drained: unknown = 'pending';
    const draining = handler.drain(2 ** 33).then(
      (left) => {
        drained = left;
      },
      (error: unknown) => {
        drained = error;
      },
    );
    const end = performance.now() + 300;
    while (performance.now() < end) await new Promise((resolve) => setImmediate(resolve));
    process.off('warning', onWarning);
    const state = drained;
    await draining;
    // Either refused up front (a bad duration) or still waiting: never polling on 1 ms timers.
    if (state === 'pending') expect(overflows).toBe(0);
    else expect((state as { code?: string }).code).toBe('INVALID_INPUT');
  });
});
