// Mutation audit (mutcore): store calls' time limits and retries. README: a failing final write
// is retried "50 ms doubling to 1 s, jittered ... until maxHoldMs since the acquisition passes";
// `retryStoreCall`: "No attempt starts at or after [the deadline]"; a synchronous store form
// "that answered a promise after all is awaited under the time limit". Timers, `performance`
// and the jitter are fixed where counted.
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  answersSynchronously,
  type Clock,
  createIdempotency,
  StoreUnavailableError,
} from '../src/index.js';
import { retryStoreCall } from '../src/store-retry.js';
import { fakeAll } from './support/fake-all.js';
import { FakeStore } from './support/fake-store.js';

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

/** Elapsed time on the (fake) performance clock. */
const elapsed: Clock = { now: () => performance.now() };

/** A call that always fails for the store, counting its attempts and when they started. */
function failing() {
  const starts: number[] = [];
  return {
    starts,
    call: async (): Promise<never> => {
      starts.push(performance.now());
      throw new StoreUnavailableError('down (injected)');
    },
  };
}

describe('mutcore: retryStoreCall', () => {
  // Mutant: the pause never doubles (an attempt every 50 ms for the whole outage).
  it('backs off: 50 ms doubling to 1 s', async () => {
    fakeAll();
    vi.spyOn(Math, 'random').mockReturnValue(0.999_999); // the pause jittered by nothing
    const { starts, call } = failing();
    const done = retryStoreCall(
      { operation: 'complete', timeoutMs: 1_000, clock: elapsed, deadline: elapsed.now() + 5_000 },
      call,
    ).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(5_100);
    expect(await done).toBeInstanceOf(StoreUnavailableError);
    const gaps = starts.slice(1).map((at, i) => Math.round(at - (starts[i] as number)));
    // 50, 100, 200, 400, 800, then 1,000 each (less the jitter's last millisecond).
    const expected = [50, 100, 200, 400, 800, 1_000, 1_000];
    expect(gaps.length).toBeGreaterThanOrEqual(expected.length);
    for (const [i, gap] of expected.entries())
      expect(Math.abs((gaps[i] as number) - gap)).toBeLessThanOrEqual(2);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(1_000);
  });

  // Mutant: the deadline not checked after the pause (one more attempt starts at it).
  it('starts no attempt at or after its deadline', async () => {
    fakeAll();
    vi.spyOn(Math, 'random').mockReturnValue(0.999_999);
    const { starts, call } = failing();
    const deadline = elapsed.now() + 140;
    const done = retryStoreCall(
      { operation: 'complete', timeoutMs: 1_000, clock: elapsed, deadline },
      call,
    ).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(await done).toBeInstanceOf(StoreUnavailableError);
    // At 0 and 50; the pause after that (100 ms) is cut to the deadline (140): nothing starts there.
    expect(starts.length).toBe(2);
    for (const at of starts) expect(at).toBeLessThan(deadline);
  });

  // Mutant: a longer maxDelayMs not cut to 1 s.
  it('never pauses longer than 1 s, whatever maxDelayMs says', async () => {
    fakeAll();
    vi.spyOn(Math, 'random').mockReturnValue(0.999_999);
    const { starts, call } = failing();
    const done = retryStoreCall(
      {
        operation: 'complete',
        timeoutMs: 1_000,
        clock: elapsed,
        deadline: elapsed.now() + 8_000,
        maxDelayMs: 3_000,
      },
      call,
    ).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(8_100);
    expect(await done).toBeInstanceOf(StoreUnavailableError);
    const gaps = starts.slice(1).map((at, i) => at - (starts[i] as number));
    expect(Math.max(...gaps)).toBeLessThanOrEqual(1_000);
  });
});

describe('mutcore: a synchronous store form that answers a promise', () => {
  // Mutant: its promise awaited without the time limit (a hung in-process store holds the caller).
  it('is bounded by storeTimeoutMs like any store call', async () => {
    const store = new FakeStore();
    store.acquire = answersSynchronously(() => new Promise<never>(() => {}) as never);
    const idem = createIdempotency({ store, heartbeatMs: false, storeTimeoutMs: 50 });
    let ran = false;
    const error = await idem
      .execute({ key: 'k' }, async () => {
        ran = true;
        return 1;
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as Error).message).toMatch(/timed out after 50 ms/);
    expect(ran).toBe(false);
  });
});
