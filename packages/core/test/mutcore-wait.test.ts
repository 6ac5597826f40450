// Mutation audit (mutcore): the bounded wait on a key in progress (`wait: { timeoutMs, pollMs }`):
// "First poll interval in ms; grows by half each poll, up to 1 s", and `signal` "stops a
// bounded wait at once". Timers (and `performance`, which the wait's deadline reads) are fake,
// so the polls are counted exactly.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createIdempotency, InProgressError } from '../src/index.js';
import { fakeAll } from './support/fake-all.js';
import { FakeStore } from './support/fake-store.js';

afterEach(() => {
  vi.useRealTimers();
});

/** A key held for a long lease, and a second engine over the same store that waits on it. */
async function heldKey(wait: { timeoutMs: number; pollMs?: number }) {
  const store = new FakeStore();
  const holder = createIdempotency({ store, heartbeatMs: false, leaseMs: 600_000 });
  const held = await holder.begin({ key: 'k' });
  expect(held.kind).toBe('acquired');
  const waiter = createIdempotency({ store, heartbeatMs: false, leaseMs: 600_000, wait });
  return { store, waiter };
}

describe('mutcore: the bounded wait', () => {
  // Mutant: the poll interval never grows (a waiter polls the store every `pollMs`).
  it('polls less often as it waits: the interval grows by half each poll', async () => {
    fakeAll();
    const { store, waiter } = await heldKey({ timeoutMs: 3_000, pollMs: 100 });
    const before = store.calls.acquire;
    const waited = waiter.begin({ key: 'k' }).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(3_100);
    expect(await waited).toBeInstanceOf(InProgressError);
    // 100, 150, 225, 338, 506, 759, 1000 ms ...: 7 or 8 acquires in 3 s, not 30.
    const polls = store.calls.acquire - before;
    expect(polls).toBeGreaterThanOrEqual(6);
    expect(polls).toBeLessThanOrEqual(10);
  });

  // Mutant: the growth not capped at 1 s (a key freed late in a long wait is seen late).
  it('polls at least once a second however long it waits', async () => {
    fakeAll();
    const { store, waiter } = await heldKey({ timeoutMs: 10_000, pollMs: 1_000 });
    const before = store.calls.acquire;
    const waited = waiter.begin({ key: 'k' }).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(10_100);
    expect(await waited).toBeInstanceOf(InProgressError);
    // One at once, then one a second: about 11 (uncapped, 1 s, 1.5 s, 2.25 s ...: 5).
    expect(store.calls.acquire - before).toBeGreaterThanOrEqual(10);
  });

  // Mutant: the signal not checked before the acquire (a caller gone already takes the key).
  it('a signal aborted before begin: rejects with its reason and acquires nothing', async () => {
    const store = new FakeStore();
    const idem = createIdempotency({
      store,
      heartbeatMs: false,
      wait: { timeoutMs: 1_000 },
    });
    const reason = new Error('client went away');
    const signal = AbortSignal.abort(reason);
    await expect(idem.begin({ key: 'free' }, { signal })).rejects.toBe(reason);
    expect(store.calls.acquire).toBe(0);
    expect(store.records.size).toBe(0);
  });
});
