// Mutation audit (mutcore): finishing the completion. README: "The caller waits at most
// `completionWaitMs`, then gets STORE_UNAVAILABLE while the write goes on in the background",
// "a failing final write [is retried] at least every tenth of `leaseMs`", and
// `refuseLateStart` "called on an execution already completed, released or abandoned ...
// throws INVALID_INPUT and touches nothing". Timers and `performance` are fake where counted.
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  createIdempotency,
  InvalidInputError,
  type OutcomeCodec,
  OutcomeNotRecordedError,
  OutcomeTooLargeError,
  StoreUnavailableError,
} from '../src/index.js';
import { fakeAll } from './support/fake-all.js';
import { FakeStore } from './support/fake-store.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('mutcore: the final write', () => {
  // Mutant: the caller's budget armed only when an attempt fails (a hanging attempt then holds
  // the caller for the whole `storeTimeoutMs`).
  it('a final write that hangs answers the caller after completionWaitMs, not storeTimeoutMs', async () => {
    fakeAll();
    const store = new FakeStore();
    const idem = createIdempotency({
      store,
      heartbeatMs: false,
      leaseMs: 60_000,
      storeTimeoutMs: 5_000,
      completionWaitMs: 100,
    });
    store.next.complete.push('hang');
    let settled: unknown;
    const running = idem
      .execute({ key: 'k' }, async () => 'v')
      .then(
        (value) => (settled = value),
        (error: unknown) => (settled = error),
      );
    await vi.advanceTimersByTimeAsync(500);
    expect(settled).toBeInstanceOf(StoreUnavailableError);
    await running;
    // The write goes on: the next attempt lands, and the key replays.
    await vi.advanceTimersByTimeAsync(6_000);
    expect(await idem.drain(0)).toBe(0);
    expect(await idem.execute({ key: 'k' }, async () => 'again')).toEqual({
      value: 'v',
      replayed: true,
    });
  });

  // Mutant: the pause between attempts not bounded by a tenth of the lease (1 s instead).
  it('a failing final write is tried again at least every tenth of leaseMs', async () => {
    fakeAll();
    const store = new FakeStore();
    const idem = createIdempotency({
      store,
      heartbeatMs: false,
      leaseMs: 1_000,
      completionWaitMs: 50,
      maxHoldMs: 60_000,
    });
    store.always.complete = 'throw';
    await expect(
      (async () => {
        const done = idem.execute({ key: 'k' }, async () => 'v');
        const caught = done.catch((e: unknown) => e);
        await vi.advanceTimersByTimeAsync(100);
        throw await caught;
      })(),
    ).rejects.toBeInstanceOf(StoreUnavailableError);
    const before = store.calls.complete;
    await vi.advanceTimersByTimeAsync(3_000);
    // Pauses of at most 100 ms (jittered down to half): 30 or more tries in 3 s; with 1 s
    // pauses, about 5.
    expect(store.calls.complete - before).toBeGreaterThanOrEqual(25);
    delete store.always.complete;
    await vi.advanceTimersByTimeAsync(200);
    expect(await idem.drain(0)).toBe(0);
  });
});

describe('mutcore: outcomes that cannot be recorded', () => {
  // Mutant: when not even the marker fits, the execution goes on renewing its lease.
  it('when not even the marker fits, the lease is no longer renewed: it runs out by itself', async () => {
    fakeAll();
    const store = new FakeStore();
    const idem = createIdempotency({ store, leaseMs: 300, heartbeatMs: 100 });
    store.always.complete = 'too_large';
    const done = idem.execute({ key: 'k' }, async () => 'v').catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(10);
    expect(await done).toBeInstanceOf(OutcomeTooLargeError);
    const renewals = store.calls.extend;
    await vi.advanceTimersByTimeAsync(2_000);
    expect(store.calls.extend).toBe(renewals);
    expect(await idem.drain(0)).toBe(0);
  });

  // Mutant: what `outcomeCodec.seal` resolves to not checked.
  it('a codec whose seal does not give bytes: OUTCOME_NOT_RECORDED (not_serializable), and the operation never runs again', async () => {
    const store = new FakeStore();
    const codec = {
      seal: async (encoded: Uint8Array) => encoded.buffer.slice(0),
      open: async (stored: Uint8Array) => stored,
    } as unknown as OutcomeCodec;
    const idem = createIdempotency({ store, heartbeatMs: false, outcomeCodec: codec });
    let runs = 0;
    const run = () =>
      idem.execute({ key: 'k' }, async () => {
        runs++;
        return 'v';
      });
    const error = await run().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OutcomeNotRecordedError);
    expect((error as OutcomeNotRecordedError).reason).toBe('not_serializable');
    expect((error as Error).cause).toBeInstanceOf(InvalidInputError);
    const again = await run().catch((e: unknown) => e);
    expect(again).toBeInstanceOf(OutcomeNotRecordedError);
    expect(runs).toBe(1);
    // What the store keeps is bytes (the plain marker), never what seal answered.
    expect([...store.records.values()][0]?.outcome).toBeInstanceOf(Uint8Array);
  });
});

describe('mutcore: refuseLateStart', () => {
  // Mutant: an abandoned execution not refused (only a finished one).
  it('throws INVALID_INPUT on an abandoned execution, and touches nothing', async () => {
    const store = new FakeStore();
    const idem = createIdempotency({ store, heartbeatMs: false });
    const begun = await idem.begin({ key: 'k' });
    if (begun.kind !== 'acquired') throw new Error('expected an acquisition');
    begun.execution.abandon();
    await expect(begun.execution.refuseLateStart()).rejects.toBeInstanceOf(InvalidInputError);
    expect(store.calls.release).toBe(0);
    expect([...store.records.values()][0]?.status).toBe('in_progress');
  });
});
