import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it, vi } from 'vitest';
import {
  type Clock,
  createIdempotency,
  type IdemEvent,
  type IdempotencyOptions,
  LeaseLostError,
  MAX_PENDING_GIVE_BACKS,
  ManualClock,
  StoreUnavailableError,
  systemClock,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

function setup<C extends Clock = ManualClock>(
  options: Partial<IdempotencyOptions> = {},
  clock: C = new ManualClock() as unknown as C,
) {
  const store = new FakeStore(clock);
  const events: IdemEvent[] = [];
  const idem = createIdempotency<unknown>({
    store,
    clock,
    leaseMs: 1_000,
    heartbeatMs: false,
    storeTimeoutMs: 100,
    onEvent: (e) => events.push(e),
    ...options,
  });
  let runs = 0;
  const op = async () => `charge-${++runs}`;
  return { clock, store, idem, events, op, runs: () => runs };
}

// The state machine's steps; store-call timings are checked in events.test.ts.
const types = (events: IdemEvent[]) =>
  events.filter((e) => e.type !== 'store_call').map((e) => e.type);

describe('finishing the completion when the store fails', () => {
  it('a complete that fails twice is retried in the foreground and lands: one run, one record', async () => {
    const { idem, store, events, op, runs } = setup({ completionWaitMs: 5_000 });
    store.next.complete.push('throw', 'throw');
    expect(await idem.execute({ key: 'k' }, op)).toEqual({ value: 'charge-1', replayed: false });
    expect(store.calls.complete).toBe(3);
    expect(types(events)).toEqual([
      'miss',
      'store_error',
      'store_error',
      'completed',
      'execution_end',
    ]);
    expect(await idem.execute({ key: 'k' }, op)).toEqual({ value: 'charge-1', replayed: true });
    expect(runs()).toBe(1);
  });

  it('a complete whose answer was lost is redelivered with the same owner and bytes and recognised', async () => {
    const { idem, store, events, op } = setup();
    store.next.complete.push('lost');
    expect(await idem.execute({ key: 'k' }, op)).toEqual({ value: 'charge-1', replayed: false });
    expect(types(events)).toEqual(['miss', 'store_error', 'completed', 'execution_end']);
    expect(types(events)).not.toContain('lease_lost');
  });

  it('past completionWaitMs the caller gets STORE_UNAVAILABLE while the retries go on; drain() waits for them', async () => {
    const { idem, store, events, op, runs } = setup({ completionWaitMs: 150 });
    store.always.complete = 'throw';
    await expect(idem.execute({ key: 'k' }, op)).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await idem.drain(10)).toBe(1);
    const before = store.calls.complete;
    await sleep(300);
    expect(store.calls.complete).toBeGreaterThan(before); // still retrying in the background
    await expect(idem.execute({ key: 'k' }, op)).rejects.toMatchObject({ code: 'IN_PROGRESS' });
    delete store.always.complete;
    expect(await idem.drain(5_000)).toBe(0);
    expect(types(events).slice(-2)).toEqual(['completed', 'execution_end']);
    expect(await idem.execute({ key: 'k' }, op)).toEqual({ value: 'charge-1', replayed: true });
    expect(runs()).toBe(1);
  });

  it('a complete that timed out but landed is recognised by the retry (redelivery)', async () => {
    const { idem, store, op } = setup({ storeTimeoutMs: 50, completionWaitMs: 2_000 });
    store.next.complete.push('hang_after');
    expect(await idem.execute({ key: 'k' }, op)).toEqual({ value: 'charge-1', replayed: false });
    expect(store.calls.complete).toBe(2);
  });

  it('a retry that finds the key taken over stops with LEASE_LOST and overwrites nothing', async () => {
    const { idem, store, events, op } = setup({ completionWaitMs: 2_000 });
    store.next.complete.push('throw');
    const begun = await idem.begin({ key: 'k' });
    if (begun.kind !== 'acquired') throw new Error('expected to acquire');
    const storageKey = begun.execution.storageKey;
    const completing = begun.execution.complete({ meta: {}, body: new Uint8Array([1]) });
    store.steal(storageKey);
    await expect(completing).rejects.toBeInstanceOf(LeaseLostError);
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'lease_lost', phase: 'complete' }),
    );
    expect(store.records.get(storageKey)).toMatchObject({ status: 'in_progress', owner: 'thief' });
    expect(await idem.drain(100)).toBe(0);
    void op;
  });

  it('the retries give up once maxHoldMs since acquisition passed', async () => {
    const { idem, store, events, clock, op } = setup({ completionWaitMs: 100, maxHoldMs: 5_000 });
    store.always.complete = 'throw';
    await expect(idem.execute({ key: 'k' }, op)).rejects.toBeInstanceOf(StoreUnavailableError);
    clock.advance(5_000);
    expect(await idem.drain(3_000)).toBe(0);
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'completion_abandoned', reason: 'max_hold' }),
    );
    const calls = store.calls.complete;
    await sleep(100);
    expect(store.calls.complete).toBe(calls);
  });

  it('heartbeats keep the lease while the completion is retried: a duplicate gets IN_PROGRESS, never a takeover', async () => {
    const { idem, store, op, runs } = setup(
      { leaseMs: 150, heartbeatMs: 40, completionWaitMs: 50 },
      systemClock,
    );
    store.always.complete = 'throw';
    await expect(idem.execute({ key: 'k' }, op)).rejects.toBeInstanceOf(StoreUnavailableError);
    await sleep(400); // well past the first lease
    await expect(idem.execute({ key: 'k' }, op)).rejects.toMatchObject({ code: 'IN_PROGRESS' });
    expect(store.calls.extend).toBeGreaterThanOrEqual(3);
    delete store.always.complete;
    expect(await idem.drain(5_000)).toBe(0);
    expect(await idem.execute({ key: 'k' }, op)).toEqual({ value: 'charge-1', replayed: true });
    expect(runs()).toBe(1);
  });

  it('the watchdog aborts the signal when renewals fail, but the completion retries go on and land', async () => {
    const { idem, store, events } = setup(
      { leaseMs: 90, heartbeatMs: 30, completionWaitMs: 50 },
      systemClock,
    );
    store.always.complete = 'throw';
    store.always.extend = 'throw';
    let signal: AbortSignal | undefined;
    await expect(
      idem.execute({ key: 'k' }, async (ctx) => {
        signal = ctx.signal;
        return 'v';
      }),
    ).rejects.toBeInstanceOf(StoreUnavailableError);
    await sleep(250);
    expect(signal?.aborted).toBe(true);
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'lease_lost', phase: 'heartbeat' }),
    );
    delete store.always.complete;
    expect(await idem.drain(5_000)).toBe(0);
    // The watchdog ended the execution (lease_lost) before the late completion landed.
    expect(types(events).slice(-1)).toEqual(['completed']);
    expect(events.filter((e) => e.type === 'execution_end')).toEqual([
      expect.objectContaining({ result: 'lease_lost' }),
    ]);
  });

  it('a failed renewal is retried soon, not a heartbeat later: two failures in a row do not lose the lease', async () => {
    // Lease 1 s, heartbeat 450 ms: renewals due at 450 and 900 ms. Both fail. Waiting a whole
    // heartbeat after each failure, the third try (1350 ms) comes after the lease passed.
    const { idem, store, events } = setup({ leaseMs: 1_000, heartbeatMs: 450 }, systemClock);
    store.next.extend.push('throw', 'throw');
    let signal: AbortSignal | undefined;
    const result = await idem.execute({ key: 'k' }, async (ctx) => {
      signal = ctx.signal;
      await sleep(1_400);
      return 'v';
    });
    expect(result).toEqual({ value: 'v', replayed: false });
    expect(signal?.aborted).toBe(false);
    expect(types(events)).not.toContain('lease_lost');
    expect(store.calls.extend).toBeGreaterThanOrEqual(3);
  });

  it('a failing final write is retried at least every tenth of the lease, so it lands soon after the store is back', async () => {
    const { idem, store } = setup(
      { leaseMs: 1_000, heartbeatMs: 300, completionWaitMs: 5_000 },
      systemClock,
    );
    store.always.complete = 'throw';
    const result = idem.execute({ key: 'k' }, async () => 'v');
    await sleep(2_000);
    // Pauses doubling to 1 s would allow at most 9 tries in 2 s; capped at 100 ms, 20 or so.
    expect(store.calls.complete).toBeGreaterThanOrEqual(15);
    delete store.always.complete;
    const back = Date.now();
    expect(await result).toEqual({ value: 'v', replayed: false });
    expect(Date.now() - back).toBeLessThan(300);
  });

  it('completionWaitMs defaults to storeTimeoutMs and is validated', () => {
    expect(setup({ storeTimeoutMs: 1234 }).idem.settings.completionWaitMs).toBe(1234);
    expect(() => setup({ completionWaitMs: 0 })).toThrow(
      expect.objectContaining({ code: 'INVALID_INPUT' }),
    );
  });
});

describe('an acquire whose answer was lost', () => {
  it('is given back with the same owner, so the retry is not blocked for a whole lease', async () => {
    const { idem, store, op, runs } = setup({ storeTimeoutMs: 50 });
    store.next.acquire.push('hang_after');
    await expect(idem.execute({ key: 'k' }, op)).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await idem.drain(2_000)).toBe(0);
    expect(await idem.execute({ key: 'k' }, op)).toEqual({ value: 'charge-1', replayed: false });
    expect(runs()).toBe(1);
  });

  it('is given back even when the acquire lands after its give-back was first due', async () => {
    const { idem, store, op, runs } = setup({ storeTimeoutMs: 50 });
    store.lateMs = 150; // applied 100 ms after the caller gave up on it
    store.next.acquire.push('late');
    await expect(idem.execute({ key: 'k' }, op)).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await idem.drain(2_000)).toBe(0);
    await sleep(200); // the late acquire has landed by now
    expect(await idem.execute({ key: 'k' }, op)).toEqual({ value: 'charge-1', replayed: false });
    expect(runs()).toBe(1);
  });

  it('is not given back when the late answer says the key was not acquired', async () => {
    const { idem, store, op } = setup({ storeTimeoutMs: 50 });
    await idem.execute({ key: 'k' }, op);
    store.next.acquire.push('late');
    await expect(idem.execute({ key: 'k' }, op)).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(await idem.drain(2_000)).toBe(0);
    expect(store.calls.release).toBe(0);
  });
});

describe('background work does not keep a process alive', () => {
  it('retries of a final write after the caller gave up run on unref’d timers only', async () => {
    const { idem, store, op } = setup({ storeTimeoutMs: 30, completionWaitMs: 60 });
    store.always.complete = 'hang';
    await expect(idem.execute({ key: 'k' }, op)).rejects.toBeInstanceOf(StoreUnavailableError);
    const created: NodeJS.Timeout[] = [];
    const original = globalThis.setTimeout;
    const spy = vi.spyOn(globalThis, 'setTimeout').mockImplementation(((
      ...args: Parameters<typeof setTimeout>
    ) => {
      const timer = original(...args);
      created.push(timer);
      return timer;
    }) as typeof setTimeout);
    try {
      for (let i = 0; created.length < 3 && i < 300; i++)
        await sleep(10, undefined, { ref: false });
    } finally {
      spy.mockRestore();
    }
    expect(created.length).toBeGreaterThanOrEqual(3);
    // Each background attempt's time limit: none may hold the process open.
    expect(created.map((t) => t.hasRef())).toEqual(created.map(() => false));
    delete store.always.complete;
    expect(await idem.drain(5_000)).toBe(0);
  });
});

describe('giving back failed acquisitions is bounded', () => {
  it(`at most MAX_PENDING_GIVE_BACKS (${MAX_PENDING_GIVE_BACKS}) are pending at once, however many acquires fail`, async () => {
    const { idem, store, op } = setup({ storeTimeoutMs: 200 });
    store.always.acquire = 'throw';
    store.always.release = 'hang';
    for (let i = 0; i < 3 * MAX_PENDING_GIVE_BACKS; i++) {
      await expect(idem.execute({ key: `k${i}` }, op)).rejects.toBeInstanceOf(
        StoreUnavailableError,
      );
    }
    expect(store.calls.release).toBe(MAX_PENDING_GIVE_BACKS);
    expect(await idem.drain(1)).toBe(MAX_PENDING_GIVE_BACKS);
    delete store.always.release;
    expect(await idem.drain(5_000)).toBe(0);
  });
});
