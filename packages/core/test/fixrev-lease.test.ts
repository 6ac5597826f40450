/**
 * fixrev: attacks on 3c1cb85 (a renewal is due one heartbeat after the renewing call was
 * SENT): renewal rate and count on slow stores, timers after stop/abandon, a store that stops
 * answering, the maximum hold, heartbeatMs false, clocks that jump, fake timers, and
 * executions through `createIdempotency(...).execute()` with the FakeStore.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ExecutionReport } from '../src/execution-report.js';
import {
  createIdempotency,
  type IdemEvent,
  InProgressError,
  LeaseLostError,
} from '../src/index.js';
import { LeaseKeeper } from '../src/lease-keeper.js';
import { resolveSettings } from '../src/settings.js';
import { FakeStore } from './support/fake-store.js';

const KEY = 'k';
const OWNER = 'me';

afterEach(() => {
  vi.useRealTimers();
});

/** A FakeStore holding KEY for OWNER, every extend answered `lateMs` late, and a keeper made as an acquisition of round trip `roundTrip` is answered. */
async function slowKeeper(
  options: {
    leaseMs: number;
    heartbeatMs: number | false;
    maxHoldMs?: number;
    storeTimeoutMs?: number;
  },
  lateMs: number,
  roundTrip = lateMs,
  clock?: { now: () => number },
) {
  const store = new FakeStore(clock);
  await store.acquire({
    key: KEY,
    owner: OWNER,
    fingerprint: 'fp',
    leaseMs: 60_000,
    retentionMs: 60_000,
  });
  store.lateMs = lateMs;
  store.always.extend = 'late';
  const lost: Array<{ phase: string; at: number }> = [];
  const t0 = performance.now();
  const report = {
    leaseLost: (phase: string) => lost.push({ phase, at: performance.now() - t0 }),
  } as unknown as ExecutionReport;
  const settings = resolveSettings({ store, ...options, ...(clock ? { clock } : {}) });
  const keeper = new LeaseKeeper(
    settings,
    KEY,
    OWNER,
    settings.clock.now() - roundTrip,
    report,
    undefined,
    roundTrip,
  );
  const signal = keeper.signal;
  return { store, keeper, signal, lost, t0 };
}

describe('fixrev: renewal rate on slow stores', () => {
  it('a round trip between a tenth of the heartbeat and the heartbeat renews once per heartbeat, not faster', async () => {
    // r = 300, H = 500: the own timer waits 200 ms, one renewal per ~500 ms.
    const { store, keeper, signal, lost } = await slowKeeper(
      { leaseMs: 1_500, heartbeatMs: 500 },
      300,
    );
    await sleep(2_600);
    keeper.stop();
    expect(lost).toEqual([]);
    expect(signal.aborted).toBe(false);
    // Due at ~200, 700, 1200, 1700, 2200 ms: 5 (some slack for a slow runner), never dozens.
    expect(store.calls.extend).toBeGreaterThanOrEqual(4);
    expect(store.calls.extend).toBeLessThanOrEqual(7);
  });

  it('a round trip longer than the heartbeat renews once per heartbeat, at most two in flight: bounded by the heartbeat', async () => {
    // r = 700 > H = 500, L = 3000: a renewal goes out one heartbeat after the previous send,
    // while that one is still in flight (leasefix; before it they went one at a time, 10 ms
    // after each answer).
    const { store, keeper, signal, lost } = await slowKeeper(
      { leaseMs: 3_000, heartbeatMs: 500 },
      700,
    );
    await sleep(3_000);
    keeper.stop();
    expect(lost).toEqual([]);
    expect(signal.aborted).toBe(false);
    // At most one send per heartbeat (due at ~10, 510, ..., 2510 ms: 6; one more of slack),
    // never a storm, and never more than two calls in flight.
    expect(store.calls.extend).toBeGreaterThanOrEqual(3);
    expect(store.calls.extend).toBeLessThanOrEqual(7);
    expect(store.maxInFlight.extend).toBeLessThanOrEqual(2);
  });

  // FINDING (LOW): the fix's own claim ("counted from the send, a renewal lands before the
  // estimate whenever a round trip is shorter than the lease minus the heartbeat", in
  // lease-keeper.ts's scheduleHeartbeat doc) does not hold for round trips between half the
  // lease and the lease minus the heartbeat: renewals are sequential (the next one waits for
  // the previous answer, then 10 ms), so with a round trip r > heartbeat each renewal is
  // answered 2r + 10 after the previous renewing send, past the estimate (send + lease) when
  // r > (lease - 10) / 2. Repro: lease 1500, heartbeat 500, every store call 900 ms (< 1000 =
  // lease - heartbeat, storeTimeoutMs default 5000): the watchdog calls the lease lost at
  // 1.5 s although every renewal lands in the store (the store's lease, started on arrival,
  // never lapses) — the same spurious lease_lost the redrev fix was about, on a slightly
  // slower link. Suggested fix: send the next renewal one heartbeat after the previous SEND
  // even while that one is still in flight (at most two outstanding), or correct the claim to
  // "shorter than min(lease - heartbeat, (lease - 10) / 2)" and refuse/ warn on a
  // storeTimeoutMs that allows such round trips.
  // fixed: (leasefix) the next renewal is sent one heartbeat after the previous send even while
  // that one is in flight, at most two outstanding. The acquisition here is answered at once:
  // with a 900 ms acquisition as well, the first renewal cannot be sent before that answer,
  // so it lands two round trips after the acquisition was sent, past its estimate (1.8 s >
  // 1.5 s) whatever the schedule: see the next test.
  it('a 900 ms round trip (< lease - heartbeat) keeps a 1.5 s lease with a 500 ms heartbeat for 3 s', async () => {
    const { store, keeper, signal, lost } = await slowKeeper(
      { leaseMs: 1_500, heartbeatMs: 500 },
      900,
      0,
    );
    await sleep(3_000);
    keeper.stop();
    expect(lost).toEqual([]);
    expect(signal.aborted).toBe(false);
    expect(store.calls.extend).toBeGreaterThanOrEqual(4);
    expect(store.calls.extend).toBeLessThanOrEqual(7);
    expect(store.maxInFlight.extend).toBe(2);
  });

  it('a 900 ms acquisition (more than half the 1.5 s lease): the first renewal cannot land before the estimate, the lease is called lost (a limit, not a schedule)', async () => {
    // The estimate counts from the acquisition's send (t0 - 900 ms: the only safe bound), and
    // no renewal can be sent before its answer (t0): the first lands at t0 + 900, past the
    // estimate at t0 + 600. What makes this a limit: the store may have applied the acquire
    // as soon as it was sent and may apply the renewal just before answering it, so between
    // the two a competitor may have taken the key over. Documented in the README.
    const { store, keeper, signal, lost } = await slowKeeper(
      { leaseMs: 1_500, heartbeatMs: 500 },
      900,
    );
    await sleep(1_200);
    keeper.stop();
    expect(signal.aborted).toBe(true);
    expect(lost.map((l) => l.phase)).toEqual(['heartbeat']);
    expect(lost[0]?.at).toBeGreaterThan(600 - 50);
    expect(lost[0]?.at).toBeLessThan(600 + 250);
    expect(store.calls.extend).toBeGreaterThanOrEqual(1);
  });
});

describe('fixrev: nothing renews after stop/abandon/loss', () => {
  it('stop() while the own renewal timer is armed: no renewal after it', async () => {
    const { store, keeper } = await slowKeeper({ leaseMs: 1_500, heartbeatMs: 500 }, 300);
    // The first renewal went out at ~200 ms and was answered at ~500 ms; the next one's own
    // timer (200 ms) is armed now.
    await sleep(560);
    const before = store.calls.extend;
    expect(before).toBe(1);
    keeper.stop();
    await sleep(1_200);
    expect(store.calls.extend).toBe(before);
  });

  it('stop() while a renewal is in flight: its answer schedules nothing', async () => {
    const { store, keeper, signal } = await slowKeeper({ leaseMs: 1_500, heartbeatMs: 500 }, 300);
    await sleep(300); // the first renewal is in flight (sent at ~200 ms)
    expect(store.calls.extend).toBe(1);
    keeper.stop();
    await sleep(1_500);
    expect(store.calls.extend).toBe(1);
    expect(signal.aborted).toBe(false);
  });

  it('abandon() while a renewal is in flight: no later renewal, and the watchdog still aborts at the estimate', async () => {
    const { store, keeper, signal, lost } = await slowKeeper(
      { leaseMs: 1_500, heartbeatMs: 500 },
      300,
    );
    await sleep(300);
    keeper.abandon();
    await sleep(2_000);
    expect(store.calls.extend).toBe(1);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBeInstanceOf(LeaseLostError);
    expect(lost.map((l) => l.phase)).toEqual(['heartbeat']);
    keeper.stop();
  });

  it('a renewal that finds another owner ends the renewals (no own timer left behind)', async () => {
    const { store, keeper, signal, lost } = await slowKeeper(
      { leaseMs: 1_500, heartbeatMs: 500 },
      300,
    );
    await sleep(560);
    // Another owner takes the key over.
    store.records.delete(KEY);
    await store.acquire({
      key: KEY,
      owner: 'other',
      fingerprint: 'fp',
      leaseMs: 60_000,
      retentionMs: 60_000,
    });
    await sleep(1_200);
    const after = store.calls.extend;
    expect(signal.aborted).toBe(true);
    expect(lost.map((l) => l.phase)).toEqual(['heartbeat']);
    await sleep(800);
    expect(store.calls.extend).toBe(after);
    keeper.stop();
  });
});

describe('fixrev: a store that stops answering still loses the lease', () => {
  it('after slow renewals, a hanging store loses the lease by the estimate plus the grace', async () => {
    const { store, keeper, signal, lost, t0 } = await slowKeeper(
      { leaseMs: 1_500, heartbeatMs: 500 },
      300,
    );
    await sleep(1_000);
    expect(lost).toEqual([]);
    const switchedAt = performance.now() - t0;
    store.always.extend = 'hang';
    await sleep(2_200);
    expect(signal.aborted).toBe(true);
    expect(lost.map((l) => l.phase)).toEqual(['heartbeat']);
    // The last renewal that landed was sent before the switch: lost within lease + grace
    // (100 ms) of the switch, plus slack; and not before the renewal sent ~500 ms before
    // the switch had its lease pass.
    const at = lost[0]?.at ?? Number.POSITIVE_INFINITY;
    expect(at).toBeLessThan(switchedAt + 1_500 + 100 + 200);
    expect(at).toBeGreaterThan(switchedAt + 1_500 - 700);
    keeper.stop();
  });

  it('a store that never answers an extend after a slow acquisition loses the lease by the estimate', async () => {
    const { store, keeper, signal, lost, t0 } = await slowKeeper(
      { leaseMs: 1_000, heartbeatMs: 300 },
      200,
    );
    store.always.extend = 'hang';
    // acquiredAt is 200 ms before t0: the estimate is at t0 + 800.
    await sleep(1_300);
    expect(signal.aborted).toBe(true);
    expect(lost).toHaveLength(1);
    expect(lost[0]?.at).toBeLessThan(800 + 60 + 250);
    expect(performance.now() - t0).toBeGreaterThan(800);
    keeper.stop();
  });
});

describe('fixrev: maxHoldMs and heartbeatMs false on the own-timer path', () => {
  it('a slow store: the lease is lost as max_hold at the hold, not renewed past it', async () => {
    const { store, keeper, signal, lost } = await slowKeeper(
      { leaseMs: 1_500, heartbeatMs: 500, maxHoldMs: 1_800 },
      300,
    );
    await sleep(2_600);
    expect(signal.aborted).toBe(true);
    expect(lost.map((l) => l.phase)).toEqual(['max_hold']);
    // acquiredAt is 300 ms before t0: the hold ends at t0 + 1500.
    expect(lost[0]?.at).toBeLessThan(1_500 + 250);
    expect(lost[0]?.at).toBeGreaterThan(1_500 - 50);
    const calls = store.calls.extend;
    await sleep(700);
    expect(store.calls.extend).toBe(calls);
    keeper.stop();
  });

  it('heartbeatMs false with a slow acquisition: no renewal, lost at the estimate', async () => {
    const { store, keeper, signal, lost } = await slowKeeper(
      { leaseMs: 800, heartbeatMs: false },
      600,
    );
    await sleep(500);
    expect(store.calls.extend).toBe(0);
    expect(signal.aborted).toBe(true);
    expect(lost.map((l) => l.phase)).toEqual(['heartbeat']);
    keeper.stop();
  });
});

describe('fixrev: clocks that jump', () => {
  it('a clock that jumps back during a renewal does not start a storm or lose the lease', async () => {
    let offset = 0;
    const clock = { now: () => Date.now() + offset };
    const { store, keeper, signal, lost } = await slowKeeper(
      { leaseMs: 1_500, heartbeatMs: 500 },
      100,
      100,
      clock,
    );
    const jumper = setInterval(() => {
      offset -= 5_000;
    }, 400);
    try {
      await sleep(2_500);
    } finally {
      clearInterval(jumper);
    }
    keeper.stop();
    expect(lost).toEqual([]);
    expect(signal.aborted).toBe(false);
    expect(store.calls.extend).toBeLessThanOrEqual(8);
  });

  it('a clock that jumps forward by more than the heartbeat during each renewal: renewals stay bounded', async () => {
    let offset = 0;
    const clock = { now: () => Date.now() + offset };
    const store = new FakeStore(clock);
    await store.acquire({
      key: KEY,
      owner: OWNER,
      fingerprint: 'fp',
      leaseMs: 600_000,
      retentionMs: 600_000,
    });
    const realExtend = store.extend.bind(store);
    store.extend = async (input) => {
      offset += 600; // each call "takes" 600 ms by the clock
      return realExtend(input);
    };
    const settings = resolveSettings({ store, clock, leaseMs: 60_000, heartbeatMs: 500 });
    const keeper = new LeaseKeeper(settings, KEY, OWNER, clock.now(), undefined, undefined, 0);
    await sleep(1_500);
    keeper.stop();
    // Every renewal is followed by one 10 ms own timer: at most one call per ~10 ms, and
    // (the next round trip being read as long) it must not spin: bound the count.
    expect(store.calls.extend).toBeLessThanOrEqual(200);
  });
});

describe('fixrev: execute() on a slow FakeStore', () => {
  it('every call 400 ms late: the lease is kept, a concurrent retry is refused, nothing runs twice', async () => {
    const store = new FakeStore();
    store.lateMs = 400;
    store.always.acquire = 'late';
    store.always.extend = 'late';
    store.always.complete = 'late';
    const events: IdemEvent[] = [];
    const idem = createIdempotency<string>({
      store,
      leaseMs: 1_500,
      heartbeatMs: 500,
      onEvent: (event) => {
        events.push(event);
      },
    });
    let runs = 0;
    let aborted = false;
    const op = async ({ signal }: { signal: AbortSignal }) => {
      runs++;
      await sleep(2_600);
      aborted = signal.aborted;
      return 'done';
    };
    const first = idem.execute({ key: 'k' }, op);
    await sleep(1_300);
    const second = idem.execute({ key: 'k' }, op).then(
      (r) => r,
      (e: unknown) => e,
    );
    const r1 = await first;
    const r2 = await second;
    expect(runs).toBe(1);
    expect(aborted).toBe(false);
    expect(r1).toEqual({ value: 'done', replayed: false });
    expect(r2).toBeInstanceOf(InProgressError);
    expect(events.filter((e) => e.type === 'lease_lost')).toEqual([]);
    expect(store.calls.extend).toBeLessThanOrEqual(8);
    const r3 = await idem.execute({ key: 'k' }, op);
    expect(r3).toEqual({ value: 'done', replayed: true });
    expect(runs).toBe(1);
    // No renewal after the completion landed.
    const calls = store.calls.extend;
    await sleep(1_100);
    expect(store.calls.extend).toBe(calls);
  });

  // FINDING (LOW), the same as the keeper-level one above, through execute(): with every
  // store call taking 900 ms (lease 1.5 s, heartbeat 500 ms, default storeTimeoutMs 5 s) the
  // operation's signal is aborted with LeaseLostError at 1.5 s although every renewal lands,
  // and renewals stop, so the store's lease then really lapses and a retry takes the key
  // over while the first operation may still run. Fix: see above.
  // fixed: (leasefix) renewals go out a heartbeat apart, at most two outstanding. Every call
  // but the acquisition is 900 ms late: a 900 ms acquisition would need its first renewal
  // answered two round trips after its send (1.8 s > the 1.5 s lease), which no schedule
  // can do (see the keeper-level test above).
  it('every call 900 ms late (< lease - heartbeat): the operation keeps its lease through execute()', async () => {
    const store = new FakeStore();
    store.lateMs = 900;
    store.always.extend = 'late';
    store.always.complete = 'late';
    const events: IdemEvent[] = [];
    const idem = createIdempotency<string>({
      store,
      leaseMs: 1_500,
      heartbeatMs: 500,
      onEvent: (event) => {
        events.push(event);
      },
    });
    let aborted = false;
    const result = await idem
      .execute({ key: 'k' }, async ({ signal }) => {
        await sleep(2_500);
        aborted = signal.aborted;
        return 'done';
      })
      .then(
        (r) => r,
        (e: unknown) => e,
      );
    expect(events.filter((e) => e.type === 'lease_lost')).toEqual([]);
    expect(aborted).toBe(false);
    expect(result).toEqual({ value: 'done', replayed: false });
    expect(store.maxInFlight.extend).toBe(2);
  });

  it('an extend still in flight when the completion lands changes nothing: the record stays completed, no lease_lost, no later renewal', async () => {
    const store = new FakeStore();
    store.lateMs = 450;
    store.always.extend = 'late';
    const events: IdemEvent[] = [];
    const idem = createIdempotency<string>({
      store,
      leaseMs: 1_500,
      heartbeatMs: 500,
      onEvent: (event) => {
        events.push(event);
      },
    });
    // The first renewal goes out at ~500 ms and is applied at ~950 ms; the operation ends at
    // ~700 ms, so the completion lands while that renewal is in flight.
    const result = await idem.execute({ key: 'k' }, async () => {
      await sleep(700);
      return 'v';
    });
    expect(result).toEqual({ value: 'v', replayed: false });
    await sleep(1_300);
    expect(store.records.get([...store.records.keys()][0] ?? '')?.status).toBe('completed');
    expect(events.filter((e) => e.type === 'lease_lost')).toEqual([]);
    const calls = store.calls.extend;
    expect(calls).toBeLessThanOrEqual(1);
    await sleep(600);
    expect(store.calls.extend).toBe(calls);
    expect(await idem.execute({ key: 'k' }, async () => 'again')).toEqual({
      value: 'v',
      replayed: true,
    });
  });

  it('a completion that fails twice on a slow store: no lease_lost while it is retried, renewals stop once it lands', async () => {
    const store = new FakeStore();
    store.lateMs = 300;
    store.always.extend = 'late';
    store.next.complete.push('throw', 'throw');
    const events: IdemEvent[] = [];
    const idem = createIdempotency<string>({
      store,
      leaseMs: 1_500,
      heartbeatMs: 500,
      onEvent: (event) => {
        events.push(event);
      },
    });
    const result = await idem.execute({ key: 'k' }, async () => {
      await sleep(300);
      return 'v';
    });
    expect(result.value).toBe('v');
    // The completion lands in the background (retried with backoff).
    const until = Date.now() + 8_000;
    while (Date.now() < until && store.calls.complete < 3) await sleep(50);
    await idem.drain(5_000);
    expect(store.calls.complete).toBe(3);
    expect(events.filter((e) => e.type === 'lease_lost')).toEqual([]);
    const calls = store.calls.extend;
    await sleep(1_200);
    expect(store.calls.extend).toBe(calls);
    expect(await idem.execute({ key: 'k' }, async () => 'again')).toEqual({
      value: 'v',
      replayed: true,
    });
  });

  it('fake timers: a 600 ms store round trip keeps a 1.5 s lease through execute()', async () => {
    vi.useFakeTimers();
    const clock = { now: () => Date.now() };
    const store = new FakeStore(clock);
    store.lateMs = 600;
    store.always.acquire = 'late';
    store.always.extend = 'late';
    const events: IdemEvent[] = [];
    const idem = createIdempotency<string>({
      store,
      clock,
      leaseMs: 1_500,
      heartbeatMs: 500,
      onEvent: (event) => {
        events.push(event);
      },
    });
    let aborted = false;
    const running = idem.execute({ key: 'k' }, async ({ signal }) => {
      await new Promise((resolve) => setTimeout(resolve, 4_000));
      aborted = signal.aborted;
      return 'ok';
    });
    await vi.advanceTimersByTimeAsync(5_000);
    const result = await running;
    expect(result.value).toBe('ok');
    expect(aborted).toBe(false);
    expect(events.filter((e) => e.type === 'lease_lost')).toEqual([]);
    expect(store.calls.extend).toBeGreaterThanOrEqual(5);
    expect(store.calls.extend).toBeLessThanOrEqual(9);
    const calls = store.calls.extend;
    await vi.advanceTimersByTimeAsync(3_000);
    expect(store.calls.extend).toBe(calls);
  });
});

/**
 * leasefix: a renewal goes out one heartbeat after the previous send even while that one is
 * in flight, at most two outstanding; the estimate is the newest landed renewal's send plus
 * its lease, never moved back by an answer out of order.
 */
describe('leasefix: two renewals outstanding at most', () => {
  /** Wraps the store's extend: when each call was sent (ms from t0) and whether it answers. */
  function recordSends(store: FakeStore, t0: number) {
    const sends: Array<{ at: number; answers: boolean }> = [];
    const realExtend = store.extend.bind(store);
    store.extend = (input) => {
      const fault = store.next.extend[0] ?? store.always.extend;
      sends.push({ at: performance.now() - t0, answers: fault !== 'hang' });
      return realExtend(input);
    };
    return sends;
  }

  it('a store that answers after 3 s, heartbeat 200 ms: never more than two extend calls in flight, one send per heartbeat at most, the lease kept', async () => {
    const { store, keeper, signal, lost, t0 } = await slowKeeper(
      { leaseMs: 10_000, heartbeatMs: 200 },
      3_000,
      0,
    );
    const sends = recordSends(store, t0);
    await sleep(6_800);
    keeper.stop();
    expect(lost).toEqual([]);
    expect(signal.aborted).toBe(false);
    // Two go out a heartbeat apart; a third waits for an answer, then goes at once.
    expect(store.maxInFlight.extend).toBe(2);
    // Sent at ~200, 400, 3200, 3400, 6200, 6400 ms.
    expect(store.calls.extend).toBeGreaterThanOrEqual(4);
    expect(store.calls.extend).toBeLessThanOrEqual(6);
    for (let i = 1; i < sends.length; i++)
      expect((sends[i]?.at ?? 0) - (sends[i - 1]?.at ?? 0)).toBeGreaterThan(200 - 15);
  });

  it('answers out of order never move the estimate back', async () => {
    // Lease 1.5 s, heartbeat 500 ms, acquired at t0. The renewal sent at 500 ms is answered
    // at 1700 ms, after the one sent at 1000 ms (answered at 1100 ms: estimate 2500 ms);
    // every later one hangs. Moved back to 500 + 1500 by the late answer, the lease would be
    // lost at 2000 ms; kept at 2500 ms, it is lost then.
    const { store, keeper, signal, lost } = await slowKeeper(
      { leaseMs: 1_500, heartbeatMs: 500 },
      100,
      0,
    );
    store.next.extend.push('late', 'late');
    store.nextLateMs.extend.push(1_200, 100);
    store.always.extend = 'hang';
    await sleep(2_250);
    expect(lost).toEqual([]);
    expect(signal.aborted).toBe(false);
    await sleep(700);
    expect(signal.aborted).toBe(true);
    expect(lost.map((l) => l.phase)).toEqual(['heartbeat']);
    expect(lost[0]?.at).toBeGreaterThan(2_500 - 50);
    expect(lost[0]?.at).toBeLessThan(2_500 + 100 + 200);
    expect(store.maxInFlight.extend).toBe(2);
    keeper.stop();
  });

  it('a store that stops answering after 900 ms round trips: lost within the last landed send + lease + grace, two calls in flight at most, none after the loss', async () => {
    const { store, keeper, signal, lost, t0 } = await slowKeeper(
      { leaseMs: 1_500, heartbeatMs: 500 },
      900,
      0,
    );
    const sends = recordSends(store, t0);
    // Renewals sent at ~500, 1000, 1500 ms are answered (900 ms late); from 1600 ms on the
    // store answers nothing.
    await sleep(1_600);
    expect(lost).toEqual([]);
    store.always.extend = 'hang';
    await sleep(1_900);
    expect(signal.aborted).toBe(true);
    expect(lost.map((l) => l.phase)).toEqual(['heartbeat']);
    const lastLanded = Math.max(...sends.filter((s) => s.answers).map((s) => s.at));
    expect(lastLanded).toBeGreaterThan(1_400);
    // The grace is a fifth of the heartbeat (100 ms), plus slack for a slow runner.
    const at = lost[0]?.at ?? Number.POSITIVE_INFINITY;
    expect(at).toBeGreaterThan(lastLanded + 1_500 - 50);
    expect(at).toBeLessThan(lastLanded + 1_500 + 100 + 200);
    expect(store.maxInFlight.extend).toBeLessThanOrEqual(2);
    const calls = store.calls.extend;
    await sleep(1_000);
    expect(store.calls.extend).toBe(calls);
    keeper.stop();
  });

  it('not_owner in answer to the second outstanding renewal aborts the signal', async () => {
    // Renewals sent at ~500 ms (applied at 1400) and 1000 ms (applied at 1900); the key is
    // taken over at 1600 ms: the second is refused at 1900 ms, before the estimate (2000 ms).
    const { store, keeper, signal, lost } = await slowKeeper(
      { leaseMs: 1_500, heartbeatMs: 500 },
      900,
      0,
    );
    await sleep(1_600);
    expect(lost).toEqual([]);
    expect(store.maxInFlight.extend).toBe(2);
    store.steal(KEY);
    await sleep(370);
    expect(signal.aborted).toBe(true);
    expect(lost.map((l) => l.phase)).toEqual(['heartbeat']);
    expect((signal.reason as Error).message).toBe('Another execution took this key over');
    expect(lost[0]?.at).toBeGreaterThan(1_900 - 50);
    const calls = store.calls.extend;
    await sleep(1_100);
    expect(store.calls.extend).toBe(calls);
    expect(store.maxInFlight.extend).toBeLessThanOrEqual(2);
    keeper.stop();
  });
});
