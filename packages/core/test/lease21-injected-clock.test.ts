/**
 * lease21: an injected clock that steps, against a store that counts real (elapsed) time.
 * The keeper counts the lease on the injected clock and on elapsed time from the send, and
 * takes the earlier end: a step back never lets its signal outlive the store's lease; a step
 * forward only ends it earlier; a clock that does not move at all (a ManualClock with real
 * timers) changes nothing while renewals land.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createIdempotency, ManualClock } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';
import { runUntilAbort as abortAt, fakeAll } from './support/lease-run.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('lease21: an injected clock that steps, a store on elapsed time', () => {
  it('steps back 1 s while the ACQUIRE is in flight: the signal aborts by the store lease, not 1 s past it', async () => {
    fakeAll();
    let offset = 0;
    const clock = { now: () => Date.now() + offset };
    const store = new FakeStore();
    store.next.acquire.push('late');
    store.nextLateMs.acquire.push(100);
    store.always.extend = 'hang';
    let stepped = false;
    const r = await abortAt(
      store,
      clock,
      (elapsed) => {
        if (!stepped && elapsed >= 50) {
          stepped = true;
          offset = -1_000;
        }
      },
      3_000,
      { leaseMs: 600, heartbeatMs: 200 },
    );
    expect(stepped).toBe(true);
    expect(r.leaseEnd).toBeGreaterThan(0);
    expect(r.abortedAt).toBeGreaterThanOrEqual(0);
    // Never after the store's lease (it started at the acquire's apply, 100 ms in).
    expect(r.abortedAt).toBeLessThanOrEqual(r.leaseEnd + 1);
  });

  // Held before too, by accident: the watchdog's delay overflowed Node's timer (> 2^31 - 1 ms)
  // and fired at once. Now bounded by elapsed time.
  it('steps back 10^12 ms (a clock reset to 1990) after a renewal landed: the signal aborts by the store lease', async () => {
    fakeAll();
    let offset = 0;
    const clock = { now: () => Date.now() + offset };
    const store = new FakeStore();
    // The first renewal lands at once; the later ones hang.
    store.next.extend.push('late');
    store.nextLateMs.extend.push(0);
    store.next.extend.push('hang', 'hang', 'hang', 'hang');
    store.always.extend = 'hang';
    let stepped = false;
    const r = await abortAt(
      store,
      clock,
      (elapsed) => {
        if (!stepped && elapsed >= 250) {
          stepped = true;
          offset = -1e12;
        }
      },
      3_000,
      { leaseMs: 600, heartbeatMs: 200 },
    );
    expect(stepped).toBe(true);
    expect(r.abortedAt).toBeGreaterThanOrEqual(0);
    expect(r.abortedAt).toBeLessThanOrEqual(r.leaseEnd + 1);
  });

  it('held: steps FORWARD 10^12 ms: the signal aborts at once (earlier, never later)', async () => {
    fakeAll();
    let offset = 0;
    const clock = { now: () => Date.now() + offset };
    const store = new FakeStore();
    let stepped = false;
    const r = await abortAt(
      store,
      clock,
      (elapsed) => {
        if (!stepped && elapsed >= 250) {
          stepped = true;
          offset = 1e12;
        }
      },
      3_000,
      { leaseMs: 600, heartbeatMs: 200 },
    );
    expect(stepped).toBe(true);
    // The next renewal (or the watchdog) finds the estimate passed: within one heartbeat.
    expect(r.abortedAt).toBeGreaterThanOrEqual(250);
    expect(r.abortedAt).toBeLessThanOrEqual(250 + 200 + 1);
  });

  // Was a finding (found by this attack): a clock that does not move left the estimate where it
  // was at every renewal, the watchdog armed at the first heartbeat was never moved, and a
  // healthy execution whose renewals all landed was aborted one lease in.
  it('a ManualClock that never moves, real timers: renewals that land keep the lease (no abort)', async () => {
    const clock = new ManualClock();
    const store = new FakeStore(clock);
    const idem = createIdempotency<string>({ store, clock, leaseMs: 300, heartbeatMs: 100 });
    const result = await idem.execute({ key: 'k', scope: 'global' }, async ({ signal }) => {
      // Four leases of real time; the manual clock stays put, the renewals land.
      await new Promise((resolve) => setTimeout(resolve, 1_200));
      return signal.aborted ? 'aborted' : 'held';
    });
    expect(result.value).toBe('held');
    expect(store.calls.extend).toBeGreaterThanOrEqual(6);
  });

  it('a ManualClock that never moves, renewals that hang: the signal aborts one lease (elapsed) after the last renewal landed', async () => {
    const clock = new ManualClock();
    const store = new FakeStore(clock);
    store.always.extend = 'hang';
    const idem = createIdempotency<string>({ store, clock, leaseMs: 300, heartbeatMs: 100 });
    const t0 = performance.now();
    let abortedAfter = -1;
    await idem
      .execute({ key: 'k', scope: 'global' }, async ({ signal }) => {
        await new Promise<void>((resolve) => {
          signal.addEventListener('abort', () => {
            abortedAfter = performance.now() - t0;
            resolve();
          });
          setTimeout(resolve, 2_000);
        });
        return 'x';
      })
      .catch(() => undefined);
    // Aborted (by the watchdog, at the estimate: 300 ms from the send less the 1 ms allowed for
    // a store's whole-ms clock (edge34), plus timer lateness; a timer may fire up to 1 ms early).
    expect(abortedAfter).toBeGreaterThanOrEqual(298);
    expect(abortedAfter).toBeLessThan(2_000);
  });
});
