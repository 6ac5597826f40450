/**
 * An acquisition answered after its lease passed, or too close to its end (the lease counts
 * from the send). Once the lease passes a competitor may take the key over, so such an
 * acquisition never runs its operation: the caller gets `LeaseLostError` (never
 * `StoreUnavailableError`, which an integration's `failOpen` runs unprotected: see
 * `@idem/http`'s `late-acquire` test), as soon as the lease's runway is reached (a tenth of
 * the lease, at most 1 s) when that comes before `storeTimeoutMs`, and the acquisition is
 * given back (owner-checked) once the store answers it, so a retry is not held off with
 * `IN_PROGRESS` for another lease. (The rev3 review withdrew a refusal with
 * StoreUnavailableError: failOpen ran the handler beside the competitor, and the late
 * acquisition was never given back.)
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import type { AcquireInput, AcquireResult, IdempotencyStore } from '../src/index.js';
import {
  answersSynchronously,
  createIdempotency,
  InProgressError,
  LeaseLostError,
  StoreUnavailableError,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';
import { holdLoop } from './support/held-loop.js';

/**
 * The next acquire is applied by the store `applyAfterMs` after its send, and answered
 * `answerAfterMs` after that.
 */
function lateAnswers(base: FakeStore): {
  store: IdempotencyStore;
  delayNext(answerAfterMs: number, applyAfterMs?: number): void;
} {
  let answerDelay = 0;
  let applyDelay = 0;
  const store = Object.create(base) as IdempotencyStore;
  store.acquire = async (input: AcquireInput): Promise<AcquireResult> => {
    const [apply, answer] = [applyDelay, answerDelay];
    answerDelay = 0;
    applyDelay = 0;
    if (apply > 0) await sleep(apply);
    const result = await base.acquire(input);
    if (answer > 0) await sleep(answer);
    return result;
  };
  return {
    store,
    delayNext: (answerAfterMs, applyAfterMs = 0) => {
      answerDelay = answerAfterMs;
      applyDelay = applyAfterMs;
    },
  };
}

const request = { key: 'k', scope: { principal: 'p' } };

describe('an acquisition answered after its lease passed', () => {
  for (const heartbeatMs of [100, false] as const) {
    it(`is never run: LeaseLostError (not a store error), and a competitor that takes the key runs once (heartbeatMs ${heartbeatMs})`, async () => {
      const base = new FakeStore();
      const late = lateAnswers(base);
      const settings = { leaseMs: 300, heartbeatMs, storeTimeoutMs: 2_000 } as const;
      const first = createIdempotency<string>({ store: late.store, ...settings });
      const second = createIdempotency<string>({ store: base, ...settings });
      const runs: string[] = [];
      late.delayNext(500);
      const startedAt = performance.now();
      const firstCall = first.execute(request, async () => {
        runs.push('first');
        await sleep(300);
        return 'first';
      });
      let failedAfter = Number.NaN;
      const firstSettled = firstCall.then(
        (r) => r.value,
        (e: unknown) => {
          failedAfter = performance.now() - startedAt;
          return e;
        },
      );
      // Once the first lease passed in the store, before the first caller's answer comes.
      await sleep(400);
      const competitor = await second.execute(request, async () => {
        runs.push('second');
        await sleep(300);
        return 'second';
      });
      expect(competitor).toEqual({ value: 'second', replayed: false });
      const error = await firstSettled;
      expect(error).toBeInstanceOf(LeaseLostError);
      expect(error).not.toBeInstanceOf(StoreUnavailableError);
      expect((error as Error).message).toMatch(/did not run/);
      // Not waited for past the lease's runway (270 ms), not `storeTimeoutMs`.
      expect(failedAfter).toBeLessThan(400);
      expect(runs).toEqual(['second']);
      await first.drain(2_000);
      await second.drain(2_000);
      // The late acquisition's give-back (owner-checked) left the competitor's outcome alone.
      expect(await second.execute(request, async () => 'again')).toEqual({
        value: 'second',
        replayed: true,
      });
      expect(runs).toEqual(['second']);
    });

    it(`is given back once answered: a retry right after runs, not IN_PROGRESS for a lease (heartbeatMs ${heartbeatMs})`, async () => {
      const base = new FakeStore();
      const late = lateAnswers(base);
      const settings = { leaseMs: 300, heartbeatMs, storeTimeoutMs: 2_000 } as const;
      const first = createIdempotency<string>({ store: late.store, ...settings });
      const retry = createIdempotency<string>({ store: base, ...settings });
      const runs: string[] = [];
      // Applied by the store 350 ms after its send (its lease there until 650), answered at 400.
      late.delayNext(50, 350);
      const firstError = await first
        .execute(request, async () => {
          runs.push('first');
          return 'first';
        })
        .catch((e: unknown) => e);
      expect(firstError).toBeInstanceOf(LeaseLostError);
      // The store holds the late acquisition until its answer (400 ms); the give-back
      // releases it then.
      await sleep(200);
      expect(
        await retry.execute(request, async () => {
          runs.push('retry');
          return 'retry';
        }),
      ).toEqual({
        value: 'retry',
        replayed: false,
      });
      expect(runs).toEqual(['retry']);
      expect(base.calls.release).toBe(1);
      await first.drain(2_000);
      await retry.drain(2_000);
    });
  }

  it('an answer that comes past the runway because the event loop was held is refused too', async () => {
    const base = new FakeStore();
    const late = lateAnswers(base);
    const idem = createIdempotency<string>({
      store: late.store,
      leaseMs: 300,
      heartbeatMs: false,
      storeTimeoutMs: 2_000,
    });
    const runs: string[] = [];
    late.delayNext(50);
    const call = idem
      .execute(request, async () => {
        runs.push('first');
        return 'first';
      })
      .catch((e: unknown) => e);
    // The answer is due at 50 ms, the time limit at 270 ms: both run only after 330 ms, the
    // answer first.
    await sleep(10);
    holdLoop(320);
    const error = await call;
    expect(error).toBeInstanceOf(LeaseLostError);
    expect((error as Error).message).toMatch(/answered the acquisition \d+ ms after its send/);
    expect(runs).toEqual([]);
    await idem.drain(2_000);
    // Given back: the key is free at once.
    expect(
      await idem.execute(request, async () => {
        runs.push('retry');
        return 'retry';
      }),
    ).toEqual({
      value: 'retry',
      replayed: false,
    });
    await idem.drain(2_000);
  });

  it('a store that answers at once, but only once its lease is nearly over (the process paused within the call), is refused too, heartbeats off', async () => {
    let releases = 0;
    const store: IdempotencyStore = {
      capabilities: { clock: 'injectable' },
      acquire: answersSynchronously((input: AcquireInput) => {
        holdLoop(95);
        return {
          kind: 'acquired' as const,
          fence: 1,
          leaseUntil: Date.now() + input.leaseMs,
          takeover: false,
          origin: input.owner,
        };
      }),
      release: answersSynchronously(() => {
        releases++;
        return { ok: true as const };
      }),
      complete: async () => ({ ok: true as const }),
      extend: async () => ({ ok: true as const, leaseUntil: 0 }),
      get: async () => undefined,
    };
    const idem = createIdempotency<string>({ store, leaseMs: 100, heartbeatMs: false });
    let ran = false;
    const error = await idem
      .execute(request, async () => {
        ran = true;
        return 'ran';
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LeaseLostError);
    expect(ran).toBe(false);
    await idem.drain(2_000);
    expect(releases).toBe(1);
  });

  it('a store time limit that fires past the runway (the event loop held) is LEASE_LOST, not STORE_UNAVAILABLE', async () => {
    const base = new FakeStore();
    base.next.acquire.push('hang');
    // The time limit (100 ms) comes before the runway (270 ms), but runs only at 330 ms.
    const idem = createIdempotency<string>({ store: base, leaseMs: 300, storeTimeoutMs: 100 });
    const call = idem.execute(request, async () => 'ran').catch((e: unknown) => e);
    await sleep(10);
    holdLoop(320);
    const error = await call;
    expect(error).toBeInstanceOf(LeaseLostError);
    expect((error as Error).cause).toBeInstanceOf(StoreUnavailableError);
    await idem.drain(2_000);
  });

  it('a store that does not answer within storeTimeoutMs, shorter than the lease, is STORE_UNAVAILABLE as before', async () => {
    const base = new FakeStore();
    base.next.acquire.push('hang');
    const idem = createIdempotency<string>({ store: base, leaseMs: 3_000, storeTimeoutMs: 100 });
    const error = await idem.execute(request, async () => 'ran').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
  });

  it('a competitor holding the key while the late acquire is answered keeps it (owner-checked give-back)', async () => {
    const base = new FakeStore();
    const late = lateAnswers(base);
    const settings = { leaseMs: 300, heartbeatMs: 100, storeTimeoutMs: 2_000 } as const;
    const first = createIdempotency<string>({ store: late.store, ...settings });
    const second = createIdempotency<string>({ store: base, ...settings });
    late.delayNext(500);
    let firstRan = false;
    const firstError = first
      .execute(request, async () => {
        firstRan = true;
        return 'first';
      })
      .catch((e: unknown) => e);
    await sleep(400);
    let release!: () => void;
    const competitor = second.execute(
      request,
      () => new Promise<string>((resolve) => (release = () => resolve('second'))),
    );
    expect(await firstError).toBeInstanceOf(LeaseLostError);
    // The late answer came at 500 ms and the give-back ran: the competitor still holds it.
    await sleep(200);
    await expect(first.execute(request, async () => 'third')).rejects.toBeInstanceOf(
      InProgressError,
    );
    release();
    expect(await competitor).toEqual({ value: 'second', replayed: false });
    expect(firstRan).toBe(false);
    await first.drain(2_000);
    await second.drain(2_000);
  });

  it('an answer within the lease runs as before', async () => {
    const base = new FakeStore();
    const late = lateAnswers(base);
    const idem = createIdempotency<string>({
      store: late.store,
      leaseMs: 600,
      heartbeatMs: 150,
      storeTimeoutMs: 2_000,
    });
    late.delayNext(200);
    const result = await idem.execute(request, async () => 'ran');
    expect(result).toEqual({ value: 'ran', replayed: false });
    await idem.drain(2_000);
  });
});
