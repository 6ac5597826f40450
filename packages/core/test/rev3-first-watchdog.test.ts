/**
 * rev3 review of aef51a9: an acquisition answered just inside its lease with heartbeats on.
 * The lease keeper armed its watchdog only with the first heartbeat, which after a slow
 * acquisition (round trip over the heartbeat) is due max(10 ms, heartbeatMs - roundTrip)
 * later, and after a fast one a heartbeat later: an acquisition answered with less than that
 * left of its lease (10 ms after a slow one, or a heartbeat close to the lease after a fast
 * one) started the operation, and nothing aborted its signal at the lease estimate: a
 * competitor took the key over at the store's deadline and ran while the first execution's
 * signal was still live (until the late heartbeat's renewal was refused). Fixed twice over:
 * an acquisition answered within the last tenth of its lease (at most 1 s) is refused and
 * given back (`late-acquire.test.ts`), and a first heartbeat due at or past the estimate arms
 * the watchdog at once. Fake timers (they fake `performance` too, so the default clock's
 * monotonic reading follows them).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { AcquireInput, AcquireResult, IdempotencyStore } from '../src/index.js';
import { createIdempotency, LeaseLostError } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

afterEach(() => {
  vi.useRealTimers();
});

/**
 * The next acquire is applied at once; its answer comes `ms` later. Renewals are applied
 * `extendMs` after their send.
 */
function answeredAfter(base: FakeStore, ms: number, extendMs = 0): IdempotencyStore {
  let first = true;
  const store = Object.create(base) as IdempotencyStore;
  store.extend = async (input) => {
    if (extendMs > 0) await new Promise((resolve) => setTimeout(resolve, extendMs));
    return base.extend(input);
  };
  store.acquire = async (input: AcquireInput): Promise<AcquireResult> => {
    const result = await base.acquire(input);
    if (first) {
      first = false;
      await new Promise((resolve) => setTimeout(resolve, ms));
    }
    return result;
  };
  return store;
}

async function scenario(
  leaseMs: number,
  heartbeatMs: number | false,
  answerMs: number,
  extendMs = 0,
) {
  vi.useFakeTimers();
  const base = new FakeStore();
  const settings = { leaseMs, heartbeatMs, storeTimeoutMs: 5_000 } as const;
  const first = createIdempotency<string>({
    store: answeredAfter(base, answerMs, extendMs),
    ...settings,
  });
  const second = createIdempotency<string>({ store: base, ...settings });
  const request = { key: 'k', scope: { principal: 'p' } };
  let firstSignal: AbortSignal | undefined;
  let finish: () => void = () => {};
  const firstRun = first
    .execute(request, (ctx) => {
      firstSignal = ctx.signal;
      return new Promise<string>((resolve) => {
        finish = () => resolve('first');
      });
    })
    .catch((e: unknown) => e);
  await vi.advanceTimersByTimeAsync(answerMs);
  const abortedOnAnswer = firstSignal?.aborted;
  await vi.advanceTimersByTimeAsync(leaseMs - answerMs + 1); // the store's lease passed
  let abortedWhenSecondRan: boolean | undefined;
  const secondResult = await second.execute(request, async () => {
    abortedWhenSecondRan = firstSignal?.aborted;
    return 'second';
  });
  finish();
  await vi.advanceTimersByTimeAsync(100);
  const firstOutcome = await firstRun;
  await vi.advanceTimersByTimeAsync(2_000);
  await first.drain(0).catch(() => {});
  await second.drain(0).catch(() => {});
  return { secondResult, abortedOnAnswer, abortedWhenSecondRan, firstOutcome };
}

describe('rev3: an operation started close to the end of its lease', () => {
  it('held (no heartbeats): the watchdog aborts it at the lease estimate, before a takeover runs', async () => {
    const { secondResult, abortedOnAnswer, abortedWhenSecondRan } = await scenario(50, false, 42);
    expect(abortedOnAnswer).toBe(false);
    expect(secondResult).toEqual({ value: 'second', replayed: false });
    expect(abortedWhenSecondRan).toBe(true);
  });

  it('heartbeats on, answered with 5 ms of a 1 s lease left: refused (LeaseLostError), never started', async () => {
    const { secondResult, abortedWhenSecondRan, firstOutcome } = await scenario(1_000, 300, 995);
    expect(secondResult).toEqual({ value: 'second', replayed: false });
    expect(abortedWhenSecondRan).toBeUndefined(); // the first operation never ran
    expect(firstOutcome).toBeInstanceOf(LeaseLostError);
  });

  it('heartbeats on, slow acquisition answered with 8 ms of a 50 ms lease left (first heartbeat due 10 ms later): aborted before a takeover runs', async () => {
    const { secondResult, abortedOnAnswer, abortedWhenSecondRan } = await scenario(50, 20, 42);
    expect(abortedOnAnswer).toBe(false);
    expect(secondResult).toEqual({ value: 'second', replayed: false });
    expect(abortedWhenSecondRan).toBe(true);
  });

  it('heartbeats on, close to the lease (990 of 1000 ms), fast acquisition: aborted before a takeover runs', async () => {
    const { secondResult, abortedOnAnswer, abortedWhenSecondRan } = await scenario(1_000, 990, 20);
    expect(abortedOnAnswer).toBe(false);
    expect(secondResult).toEqual({ value: 'second', replayed: false });
    expect(abortedWhenSecondRan).toBe(true);
  });

  it('heartbeats on, first heartbeat due exactly at the lease estimate (answered at 40 of 50 ms), renewals applied 5 ms after their send: aborted before a takeover runs', async () => {
    const { secondResult, abortedOnAnswer, abortedWhenSecondRan } = await scenario(50, 20, 40, 5);
    expect(abortedOnAnswer).toBe(false);
    expect(secondResult).toEqual({ value: 'second', replayed: false });
    expect(abortedWhenSecondRan).toBe(true);
  });
});
