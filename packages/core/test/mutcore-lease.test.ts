// Mutation audit (mutcore): the lease keeper. `abandon()` "stops renewing the lease without
// releasing the key: the lease then runs out by itself" and `signal` "aborts when the lease is
// lost (or may have been)": the operation still learns when its lease passed. Timers and
// `performance` are fake.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createIdempotency, LeaseLostError } from '../src/index.js';
import { fakeAll } from './support/fake-all.js';
import { FakeStore } from './support/fake-store.js';
import { holdLoop } from './support/held-loop.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('mutcore: abandon', () => {
  // Mutant: abandon before the first heartbeat arms no watchdog (the signal never aborts).
  it('abandoned before its first heartbeat: no renewal, and the signal aborts once the lease passes', async () => {
    fakeAll();
    const store = new FakeStore();
    const idem = createIdempotency({ store, leaseMs: 300, heartbeatMs: 100 });
    const begun = await idem.begin({ key: 'k' });
    if (begun.kind !== 'acquired') throw new Error('expected an acquisition');
    const { signal } = begun.execution;
    begun.execution.abandon();
    await vi.advanceTimersByTimeAsync(250);
    expect(signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(200);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBeInstanceOf(LeaseLostError);
    expect(store.calls.extend).toBe(0);
    expect(store.calls.release).toBe(0);
  });

  it('abandoned after renewals: they stop, and the signal aborts a lease after the last one', async () => {
    fakeAll();
    const store = new FakeStore();
    const idem = createIdempotency({ store, leaseMs: 300, heartbeatMs: 100 });
    const begun = await idem.begin({ key: 'k' });
    if (begun.kind !== 'acquired') throw new Error('expected an acquisition');
    const { signal } = begun.execution;
    await vi.advanceTimersByTimeAsync(250);
    const renewals = store.calls.extend;
    expect(renewals).toBeGreaterThanOrEqual(2);
    begun.execution.abandon();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(store.calls.extend).toBe(renewals);
    expect(signal.aborted).toBe(true);
  });
});

describe('mutcore: a lost lease while the operation runs', () => {
  // Mutant: renewals go on after the lease was lost (a renewal retried after a timeout).
  it('ends the renewals: none is sent once the signal aborted', async () => {
    fakeAll();
    const store = new FakeStore();
    // Renewals answer after 1 s, past the 250 ms time limit: the two sent (at 100 and 200 ms)
    // fail after the lease was lost at 300 ms, and their retries come due then.
    store.always.extend = 'late';
    store.lateMs = 1_000;
    const idem = createIdempotency({ store, leaseMs: 300, heartbeatMs: 100, storeTimeoutMs: 250 });
    const begun = await idem.begin({ key: 'k' });
    if (begun.kind !== 'acquired') throw new Error('expected an acquisition');
    const { signal } = begun.execution;
    await vi.advanceTimersByTimeAsync(400);
    expect(signal.aborted).toBe(true);
    const renewals = store.calls.extend;
    await vi.advanceTimersByTimeAsync(3_000);
    expect(store.calls.extend).toBe(renewals);
    await begun.execution.release().catch(() => {});
  });
});

describe('mutcore: the grace of a held-up heartbeat', () => {
  // Mutant: the grace not capped at storeTimeoutMs (a fifth of the heartbeat instead): the
  // signal stayed live that much longer past the store's deadline. Real time: the event loop
  // is held until just before the lease estimate, so the first heartbeat runs late.
  it('is at most storeTimeoutMs: the signal aborts by the estimate plus that, not a fifth of the heartbeat', async () => {
    vi.useRealTimers();
    const store = new FakeStore();
    store.always.extend = 'hang';
    // Grace: min(storeTimeoutMs 40, heartbeatMs / 5 = 160) = 40 ms.
    const idem = createIdempotency({
      store,
      leaseMs: 1_200,
      heartbeatMs: 800,
      storeTimeoutMs: 40,
    });
    const sent = performance.now();
    const begun = await idem.begin({ key: 'k' });
    if (begun.kind !== 'acquired') throw new Error('expected an acquisition');
    const { signal } = begun.execution;
    // Held until 40 ms before the estimate: the heartbeat due at 800 ms runs at 1,160 ms.
    holdLoop(1_160 - (performance.now() - sent));
    // Armed before the heartbeat runs, so it fires after a watchdog due before it (timers run
    // in the order they are due): with the grace capped the watchdog is due at 1,200 ms, this
    // at 1,260 ms, an uncapped grace at 1,320 ms.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(signal.aborted).toBe(true);
    begun.execution.abandon();
  });
});
