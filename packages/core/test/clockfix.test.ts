/**
 * clockfix: with the default clock every duration the engine measures is counted on a
 * monotonic clock (the leaserev2 clock-step findings), while an injected clock is used as
 * given. The findings' own tests are in leaserev2.test.ts; these cover the rest of the change.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { elapsedClock, monotonicClock } from '../src/clock.js';
import {
  createIdempotency,
  ManualClock,
  StoreUnavailableError,
  systemClock,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';
import { stepDate } from './support/step-date.js';

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

const fakeAll = () =>
  vi.useFakeTimers({
    toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date', 'performance'],
  });

/** Steps `Date.now()` (and so `systemClock`) by `offset`. */
describe('the engine clock for durations', () => {
  it('is monotonic for the default clock, the injected clock as given', () => {
    expect(elapsedClock(systemClock)).toBe(monotonicClock);
    const manual = new ManualClock();
    expect(elapsedClock(manual)).toBe(manual);
    const custom = { now: () => Date.now() };
    expect(elapsedClock(custom)).toBe(custom);
  });

  it('reads Date.now() (to within a few ms) until the wall clock steps, and never follows a step', () => {
    expect(Math.abs(monotonicClock.now() - Date.now())).toBeLessThan(50);
    const step = stepDate();
    const before = monotonicClock.now();
    step.by(-3_600_000);
    const after = monotonicClock.now();
    expect(after).toBeGreaterThanOrEqual(before);
    expect(after - before).toBeLessThan(50);
    step.by(7_200_000);
    expect(monotonicClock.now() - before).toBeLessThan(50);
  });

  it('under fake timers reads the fake Date.now() exactly, and moves with the fake performance.now()', async () => {
    fakeAll();
    expect(monotonicClock.now()).toBe(Date.now());
    await vi.advanceTimersByTimeAsync(1_234);
    expect(monotonicClock.now()).toBe(Date.now());
  });
});

describe('the give-back of a failed acquire (default clock)', () => {
  // Before: the give-back's deadline (the acquire's send + leaseMs) was read on Date.now():
  // a wall clock stepped back 1 h kept it retrying the release (a try every second or so)
  // for the hour; now it ends with the lease it could hold, in elapsed time.
  it('Date.now() steps back 1 h after the acquire failed: the release retries end with the lease', async () => {
    fakeAll();
    const store = new FakeStore();
    const step = stepDate();
    const idem = createIdempotency<string>({
      store,
      leaseMs: 600,
      heartbeatMs: 200,
      storeTimeoutMs: 50,
    });
    store.next.acquire.push('lost'); // applied, the answer lost: it may hold the key
    store.always.release = 'throw';
    const failed = await idem.execute({ key: 'k' }, async () => 'v').catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(StoreUnavailableError);
    step.by(-3_600_000);
    await vi.advanceTimersByTimeAsync(2_000);
    const atLeaseEnd = store.calls.release;
    expect(atLeaseEnd).toBeGreaterThan(0);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(store.calls.release).toBe(atLeaseEnd);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('an injected clock stepped back still drives it as given (the give-back waits for that clock)', async () => {
    fakeAll();
    let offset = 0;
    const clock = { now: () => Date.now() + offset };
    const store = new FakeStore(clock);
    const idem = createIdempotency<string>({
      store,
      clock,
      leaseMs: 600,
      heartbeatMs: 200,
      storeTimeoutMs: 50,
    });
    store.next.acquire.push('lost');
    store.always.release = 'throw';
    await idem.execute({ key: 'k' }, async () => 'v').catch(() => undefined);
    offset = -10_000;
    await vi.advanceTimersByTimeAsync(2_000);
    const atLeaseEnd = store.calls.release;
    await vi.advanceTimersByTimeAsync(5_000);
    // The injected clock is 10 s behind: the give-back goes on by it.
    expect(store.calls.release).toBeGreaterThan(atLeaseEnd);
    offset = 0;
    await vi.advanceTimersByTimeAsync(5_000);
    const ended = store.calls.release;
    await vi.advanceTimersByTimeAsync(5_000);
    expect(store.calls.release).toBe(ended);
  });
});
