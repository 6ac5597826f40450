import { afterEach, describe, expect, it, vi } from 'vitest';
import { createIdempotency, type IdemEvent, LeaseLostError } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('the maximum hold read at the watchdog', () => {
  it('is max_hold when the watchdog runs a millisecond before the clock reaches it', async () => {
    // Node counts a timer on its own clock, truncated to ms differently from Date.now(): the
    // watchdog armed for the hold's end can run while the engine's clock still reads 1 ms
    // before it. Seen with PostgreSQL: read as a lost heartbeat, the transactional engine
    // did not end the transaction, and the row stayed locked for the statement's 30 s.
    vi.useFakeTimers();
    let lag = 0;
    const clock = { now: () => Date.now() - lag };
    const store = new FakeStore(clock);
    const events: IdemEvent[] = [];
    const idem = createIdempotency({
      store,
      clock,
      leaseMs: 1_000,
      heartbeatMs: 100,
      maxHoldMs: 300,
      onEvent: (event) => {
        events.push(event);
      },
    });
    let reason: unknown;
    const running = idem.execute({ key: 'k' }, async ({ signal }) => {
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      reason = signal.reason;
      return 'ended';
    });
    // Two renewals (at 100 and 200 ms), the second cut to the hold's end (300 ms).
    await vi.advanceTimersByTimeAsync(250);
    expect(store.calls.extend).toBe(2);
    expect(events.some((e) => e.type === 'lease_lost')).toBe(false);
    // From here the engine's clock is 1 ms behind the timers.
    lag = 1;
    await vi.advanceTimersByTimeAsync(50);
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'lease_lost', phase: 'max_hold' }),
    );
    expect(events).not.toContainEqual(
      expect.objectContaining({ type: 'lease_lost', phase: 'heartbeat' }),
    );
    expect(reason).toBeInstanceOf(LeaseLostError);
    expect((reason as Error).message).toMatch(/maximum hold/);
    await vi.advanceTimersByTimeAsync(100);
    await expect(running).resolves.toEqual({ value: 'ended', replayed: false });
  });

  it('is heartbeat when renewals fail and the lease passes well before the hold', async () => {
    vi.useFakeTimers();
    const store = new FakeStore();
    const events: IdemEvent[] = [];
    const idem = createIdempotency({
      store,
      leaseMs: 300,
      heartbeatMs: 100,
      maxHoldMs: 10_000,
      onEvent: (event) => {
        events.push(event);
      },
    });
    store.always.extend = 'throw';
    const running = idem.execute({ key: 'k' }, async ({ signal }) => {
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      return 'ended';
    });
    await vi.advanceTimersByTimeAsync(400);
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'lease_lost', phase: 'heartbeat' }),
    );
    expect(events).not.toContainEqual(
      expect.objectContaining({ type: 'lease_lost', phase: 'max_hold' }),
    );
    store.always.extend = undefined;
    await vi.advanceTimersByTimeAsync(100);
    await running;
  });
});
