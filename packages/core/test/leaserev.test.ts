/**
 * leaserev: adversarial review of the lease keeper's two-in-flight renewals (bf302fb, 33c763a,
 * ecaf850): what the store sees vs what the keeper believes, in every order, with clocks that
 * step, stores that stall, and through `execute()`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { ExecutionReport } from '../src/execution-report.js';
import type { ExtendInput, OwnerWriteResult } from '../src/index.js';
import { createIdempotency } from '../src/index.js';
import { LeaseKeeper } from '../src/lease-keeper.js';
import { resolveSettings } from '../src/settings.js';
import { FakeStore } from './support/fake-store.js';

const KEY = 'k';
const OWNER = 'me';

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

type Leg = {
  req: number;
  resp: number;
  fault: 'ok' | 'lost' | 'hang' | 'throw' | 'fail';
  /** The answer reaches the caller in the check phase (as socket I/O does: after timers). */
  io?: boolean;
};

/**
 * A FakeStore behind a link: each extend waits `req` before it is applied (the store's own
 * truth) and `resp` before its answer reaches the caller; `hang` never answers (applied),
 * `throw` fails before reaching the store, `lost` is applied and its answer lost.
 */
class LinkStore extends FakeStore {
  legs: Leg[] = [];
  fallback: Leg = { req: 0, resp: 0, fault: 'ok' };
  /** Extends sent and not answered to the caller yet (a hang stays), and the most at once. */
  pending = 0;
  maxPending = 0;
  /** Extends sent by the caller (FakeStore's `calls` counts them when applied). */
  sent = 0;
  log: string[] = [];
  override extend(input: ExtendInput): Promise<OwnerWriteResult> {
    const leg = this.legs.shift() ?? this.fallback;
    this.sent++;
    this.pending++;
    this.maxPending = Math.max(this.maxPending, this.pending);
    const done = () => {
      this.pending--;
    };
    if (leg.fault === 'throw') {
      done();
      return Promise.reject(new Error('extend failed (injected)'));
    }
    if (leg.fault === 'fail') {
      // Fails after `req` without reaching the store (settled: nothing left outstanding).
      return new Promise<OwnerWriteResult>((_, reject) =>
        setTimeout(() => {
          done();
          reject(new Error('extend failed late (injected)'));
        }, leg.req),
      );
    }
    return new Promise<OwnerWriteResult>((resolve, reject) => {
      setTimeout(() => {
        const applied = super.extend(input);
        void applied.then((r) => {
          this.log.push(`${Date.now()} applied ${input.leaseMs} ${r.ok ? 'ok' : 'not_owner'}`);
          if (leg.fault === 'hang') return;
          setTimeout(() => {
            const answer = () => {
              done();
              if (leg.fault === 'lost') reject(new Error('answer lost (injected)'));
              else resolve(r);
            };
            if (leg.io) setImmediate(answer);
            else answer();
          }, leg.resp);
        });
      }, leg.req);
    });
  }
}

async function keeperOn(
  store: FakeStore,
  options: {
    leaseMs: number;
    heartbeatMs: number | false;
    maxHoldMs?: number;
    storeTimeoutMs?: number;
  },
  clock?: { now: () => number },
) {
  const acquiredAt = (clock ?? { now: () => Date.now() }).now();
  await store.acquire({
    key: KEY,
    owner: OWNER,
    fingerprint: 'fp',
    leaseMs: options.leaseMs,
    retentionMs: 60_000,
  });
  const lost: Array<{ phase: string; at: number }> = [];
  const report = {
    leaseLost: (phase: string) => lost.push({ phase, at: Date.now() }),
  } as unknown as ExecutionReport;
  const settings = resolveSettings({ store, ...options, ...(clock ? { clock } : {}) });
  const keeper = new LeaseKeeper(settings, KEY, OWNER, acquiredAt, report, undefined, 0);
  const signal = keeper.signal;
  return { keeper, signal, lost };
}

const fakeAll = () =>
  vi.useFakeTimers({
    toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date', 'performance'],
  });

type RunResult = {
  overlapMs: number;
  overlapAt: number;
  maxKeeperInFlight: number;
  maxStorePending: number;
  afterStopCalls: number;
  log: string[];
};

/**
 * One run: the keeper renews over a link of random legs; a competitor takes the key over at
 * the first millisecond the store's lease has passed. Measures how long the keeper's signal
 * stayed un-aborted after the store's lease for OWNER passed (the competitor holds then).
 */
async function fuzzRun(
  legs: Leg[],
  opts: { leaseMs: number; heartbeatMs: number; storeTimeoutMs: number; maxHoldMs?: number },
  runMs: number,
  tolMs = 1,
): Promise<RunResult> {
  fakeAll();
  const store = new LinkStore();
  store.legs = legs.slice();
  store.fallback = { req: 0, resp: 0, fault: 'hang' };
  const { keeper, signal } = await keeperOn(store, opts);
  const t0 = Date.now();
  let overlapMs = 0;
  let overlapAt = -1;
  let maxKeeperInFlight = 0;
  let stolen = false;
  for (let t = 0; t < runMs; t++) {
    await vi.advanceTimersByTimeAsync(1);
    const now = Date.now();
    const r = store.records.get(KEY);
    maxKeeperInFlight = Math.max(
      maxKeeperInFlight,
      (keeper as unknown as { inFlight: number }).inFlight,
    );
    if (!stolen && r && r.owner === OWNER && now >= r.leaseUntil) {
      // The competitor's acquire lands the moment the lease passed.
      const got = await store.acquire({
        key: KEY,
        owner: 'thief',
        fingerprint: 'fp',
        leaseMs: 60_000,
        retentionMs: 60_000,
      });
      if (got.kind === 'acquired') {
        stolen = true;
        store.log.push(`${now} stolen (leaseUntil ${r.leaseUntil - t0})`);
      }
    }
    if (stolen && !signal.aborted) {
      const since = now - (store.records.get(KEY)?.leaseUntil ?? now) + 60_000;
      if (since > tolMs) {
        overlapMs++;
        if (overlapAt < 0) overlapAt = now - t0;
      }
    }
    if (signal.aborted && stolen) break;
  }
  keeper.stop();
  const before = store.sent;
  await vi.advanceTimersByTimeAsync(opts.leaseMs * 2);
  const afterStopCalls = store.sent - before;
  vi.useRealTimers();
  return {
    overlapMs,
    overlapAt,
    maxKeeperInFlight,
    maxStorePending: store.maxPending,
    afterStopCalls,
    log: store.log.map((l) => l.replace(/^(\d+)/, (m) => String(Number(m) - t0))),
  };
}

const legArb = (maxMs: number) =>
  fc.record({
    req: fc.integer({ min: 0, max: maxMs }),
    resp: fc.integer({ min: 0, max: maxMs }),
    fault: fc.constantFrom<Leg['fault']>('ok', 'ok', 'ok', 'ok', 'ok', 'lost', 'hang', 'throw'),
  });

describe('leaserev: random round trips (fake timers, FakeStore knows the truth)', () => {
  it('held: never more than two renewals awaited by the keeper, nothing after stop()', async () => {
    const opts = { leaseMs: 600, heartbeatMs: 200, storeTimeoutMs: 5_000 };
    await fc.assert(
      fc.asyncProperty(fc.array(legArb(500), { minLength: 1, maxLength: 12 }), async (legs) => {
        const r = await fuzzRun(legs, opts, 1_500);
        expect(r.maxKeeperInFlight).toBeLessThanOrEqual(2);
        expect(r.afterStopCalls).toBe(0);
      }),
      { numRuns: 100, seed: 42 },
    );
  }, 60_000);

  it('held: signal not aborted => the store lease for OWNER is live (random legs, a competitor at the first ms it passed)', async () => {
    const opts = { leaseMs: 600, heartbeatMs: 200, storeTimeoutMs: 5_000 };
    await fc.assert(
      fc.asyncProperty(fc.array(legArb(500), { minLength: 1, maxLength: 12 }), async (legs) => {
        const r = await fuzzRun(legs, opts, 1_500);
        expect(r.overlapMs, JSON.stringify(r)).toBe(0);
        expect(r.maxKeeperInFlight).toBeLessThanOrEqual(2);
      }),
      { numRuns: 100, seed: 7 },
    );
  }, 60_000);

  it('held: same with a 1500 ms lease, default heartbeat, a 300 ms store time limit', async () => {
    const opts = { leaseMs: 1_500, heartbeatMs: 500, storeTimeoutMs: 300 };
    await fc.assert(
      fc.asyncProperty(fc.array(legArb(800), { minLength: 1, maxLength: 12 }), async (legs) => {
        const r = await fuzzRun(legs, opts, 3_000);
        expect(r.overlapMs, JSON.stringify(r)).toBe(0);
        expect(r.maxKeeperInFlight).toBeLessThanOrEqual(2);
      }),
      { numRuns: 60, seed: 11 },
    );
  }, 60_000);
});

describe('leaserev: targeted orders (fake timers)', () => {
  // FINDING (HIGH, pre-existing: same code in ecaf850~3, not fixed by the change): a heartbeat
  // that runs within the grace (a fifth of the heartbeat, at most storeTimeoutMs) before the
  // lease estimate moves the watchdog to now + grace, PAST the estimate, although the estimate
  // may equal the store's real deadline (a renewal applied the moment it was sent). Here
  // renewals time out client-side (never applied) and are retried every timeout + h/5, so one
  // retry runs 10 ms before the estimate: the watchdog moves 15 ms past it while the store's
  // lease passed and a competitor acquired. With defaults (lease 30 s, heartbeat 10 s) the
  // grace is 2 s. Suggested fix: never move the watchdog past the estimate unless the keeper
  // is `late` (the loop stall case the grace exists for), or cap the delay at
  // leaseEstimate - now for a beat that is not late.
  // fixed for this order by counting unsettled extends (the timed-out ones stay at the store,
  // so no retry goes near the estimate); the grace itself: the next test.
  it('a retried renewal just before the estimate: the keeper runs on past the store deadline while a competitor holds the key', async () => {
    fakeAll();
    const store = new LinkStore();
    store.legs = [
      { req: 0, resp: 10, fault: 'ok' }, // sent 200, applied 200: store deadline 800, estimate 800
    ];
    store.fallback = { req: 100_000, resp: 0, fault: 'hang' }; // never applied in the test
    const { keeper, signal } = await keeperOn(store, {
      leaseMs: 600,
      heartbeatMs: 200,
      storeTimeoutMs: 25,
    });
    const t0 = Date.now();
    let overlap = 0;
    for (let t = 0; t < 1_200; t++) {
      await vi.advanceTimersByTimeAsync(1);
      const r = store.records.get(KEY);
      if (r?.owner === OWNER && Date.now() >= r.leaseUntil) {
        const got = await store.acquire({
          key: KEY,
          owner: 'thief',
          fingerprint: 'fp',
          leaseMs: 60_000,
          retentionMs: 60_000,
        });
        expect(got.kind).toBe('acquired');
        expect(Date.now() - t0).toBeLessThanOrEqual(802);
      }
      if (store.records.get(KEY)?.owner === 'thief' && !signal.aborted) overlap++;
    }
    keeper.stop();
    // Observed: 15 ms with both executions holding (the competitor from 800, the keeper to 815).
    expect(overlap).toBe(0);
  });

  // FINDING (HIGH, the previous one with renewals that FAIL after 15 ms, settled: the
  // unsettled-extend bound does not hold them back). Renewal 1 sent 200, applied at once
  // (store deadline and estimate 800); then every renewal fails 15 ms after its send and is
  // retried a fifth of the heartbeat (40 ms) later: one goes out at 785, within the grace
  // (40 ms, default storeTimeoutMs) of the estimate, and moved the watchdog to 825.
  // fixed: a heartbeat that runs on time near the estimate (not held up by the event loop) keeps the watchdog at the estimate.
  it('retried renewals that fail fast: one runs just before the estimate and its grace outlives the store lease', async () => {
    fakeAll();
    const store = new LinkStore();
    store.legs = [{ req: 0, resp: 10, fault: 'ok' }];
    store.fallback = { req: 15, resp: 0, fault: 'fail' };
    const { keeper, signal } = await keeperOn(store, { leaseMs: 600, heartbeatMs: 200 });
    const t0 = Date.now();
    let overlap = 0;
    let stolenAt = -1;
    for (let t = 0; t < 1_200; t++) {
      await vi.advanceTimersByTimeAsync(1);
      const r = store.records.get(KEY);
      if (r?.owner === OWNER && Date.now() >= r.leaseUntil) {
        await store.acquire({
          key: KEY,
          owner: 'thief',
          fingerprint: 'fp',
          leaseMs: 60_000,
          retentionMs: 60_000,
        });
        stolenAt = Date.now() - t0;
      }
      if (store.records.get(KEY)?.owner === 'thief' && !signal.aborted) overlap++;
    }
    keeper.stop();
    expect(stolenAt).toBeGreaterThanOrEqual(800);
    expect(stolenAt).toBeLessThanOrEqual(802);
    expect(overlap).toBeLessThanOrEqual(1);
  });

  // FINDING (HIGH, same root cause as the previous one, reached through this change's `due`
  // path): a renewal due while two are outstanding goes out when one of them answers. When
  // that answer is an OLDER renewal (it does not move the estimate) arriving just before the
  // estimate, the due renewal's beat moves the watchdog to now + grace, past the estimate,
  // which here equals the store's deadline (renewal 2 applied at its send). Order: renewal 1
  // sent 200 (answered 970), renewal 2 sent 400 (applied at once, answered 410: estimate and
  // store deadline 1000), renewal 3 sent 600 (silent), due at 800, sent at 970 when renewal 1
  // answers: watchdog to 1010; a competitor holds the key from 1000.
  // fixed: a held-back renewal released by an answer is not held up by the event loop: the watchdog stays at the estimate.
  it('an older renewal answered just before the estimate releases the due renewal, whose grace outlives the store lease', async () => {
    fakeAll();
    const store = new LinkStore();
    store.legs = [
      { req: 0, resp: 770, fault: 'ok' },
      { req: 0, resp: 10, fault: 'ok' },
    ];
    store.fallback = { req: 100_000, resp: 0, fault: 'hang' };
    const { keeper, signal } = await keeperOn(store, { leaseMs: 600, heartbeatMs: 200 });
    let overlap = 0;
    for (let t = 0; t < 1_500; t++) {
      await vi.advanceTimersByTimeAsync(1);
      const r = store.records.get(KEY);
      if (r?.owner === OWNER && Date.now() >= r.leaseUntil) {
        await store.acquire({
          key: KEY,
          owner: 'thief',
          fingerprint: 'fp',
          leaseMs: 60_000,
          retentionMs: 60_000,
        });
      }
      if (store.records.get(KEY)?.owner === 'thief' && !signal.aborted) overlap++;
    }
    keeper.stop();
    // Observed: ~10 ms of overlap.
    expect(overlap).toBeLessThanOrEqual(1);
  });

  // FINDING (HIGH): the watchdog is armed at an answer as `startedAt + lease - clock.now()`,
  // both read on the injected wall clock (systemClock: Date.now), while the timers and the
  // store count real time. A clock stepped back by X while a renewal is in flight (an NTP
  // step) arms the watchdog X ms too late: the keeper believes it holds the lease X ms after
  // the store's lease passed. Here X = 1000 ms: the store's lease (applied at 200) passes at
  // 800 and a competitor acquires, the keeper's signal aborts only at ~1800. Suggested fix:
  // count the estimate and the watchdog on a monotonic clock (performance.now, as
  // FixedDelayTimers already does), or arm the watchdog for `lease - (now - startedAt)` with
  // both ends from a monotonic source.
  // Fixed for the default clock (leasefix2, see the next test), and for an injected clock
  // (lease21): the keeper counts the lease on elapsed time (performance.now, from the send)
  // as well as on the injected clock, and takes the earlier end.
  it('the wall clock steps back 1 s while a renewal is in flight: the keeper holds on 1 s past the store lease', async () => {
    fakeAll();
    let offset = 0;
    const clock = { now: () => Date.now() + offset };
    const store = new LinkStore();
    store.legs = [{ req: 0, resp: 50, fault: 'ok' }]; // sent 200, applied 200, answered 250
    store.fallback = { req: 100_000, resp: 0, fault: 'hang' };
    const { keeper, signal } = await keeperOn(
      store,
      { leaseMs: 600, heartbeatMs: 200, storeTimeoutMs: 5_000 },
      clock,
    );
    const t0 = Date.now();
    let overlap = 0;
    for (let t = 0; t < 2_500; t++) {
      await vi.advanceTimersByTimeAsync(1);
      if (Date.now() - t0 === 225) offset = -1_000;
      const r = store.records.get(KEY);
      if (r?.owner === OWNER && Date.now() >= r.leaseUntil) {
        await store.acquire({
          key: KEY,
          owner: 'thief',
          fingerprint: 'fp',
          leaseMs: 60_000,
          retentionMs: 60_000,
        });
      }
      if (store.records.get(KEY)?.owner === 'thief' && !signal.aborted) overlap++;
    }
    keeper.stop();
    // Observed: ~1000 ms of overlap.
    expect(overlap).toBeLessThanOrEqual(1);
  });

  // fixed for the default clock (leasefix2): the keeper counts elapsed time on performance.now()
  // when no clock is injected; the same step back of Date.now() no longer delays the watchdog.
  it('the default clock: Date.now() steps back 1 s while a renewal is in flight: the keeper still aborts at the store lease', async () => {
    fakeAll();
    const store = new LinkStore();
    store.legs = [{ req: 0, resp: 50, fault: 'ok' }]; // sent 200, applied 200, answered 250
    store.fallback = { req: 100_000, resp: 0, fault: 'hang' };
    const { keeper, signal } = await keeperOn(store, {
      leaseMs: 600,
      heartbeatMs: 200,
      storeTimeoutMs: 5_000,
    });
    const p0 = performance.now();
    let overlap = 0;
    let stepped = false;
    for (let t = 0; t < 2_500; t++) {
      await vi.advanceTimersByTimeAsync(1);
      if (!stepped && performance.now() - p0 >= 225) {
        stepped = true;
        vi.setSystemTime(Date.now() - 1_000);
      }
      const r = store.records.get(KEY);
      // The FakeStore counts on Date.now(): its lease is judged on the elapsed (monotonic) time.
      const elapsed = performance.now() - p0;
      if (r?.owner === OWNER && elapsed >= 800 && store.records.get(KEY)?.owner === OWNER) {
        store.steal(KEY);
      }
      if (store.records.get(KEY)?.owner !== OWNER && !signal.aborted) overlap++;
    }
    keeper.stop();
    expect(stepped).toBe(true);
    expect(overlap).toBeLessThanOrEqual(1);
  });

  it('held: the wall clock steps FORWARD 1 s while a renewal is in flight: the keeper only aborts earlier (conservative)', async () => {
    fakeAll();
    let offset = 0;
    const clock = { now: () => Date.now() + offset };
    const store = new LinkStore();
    store.legs = [{ req: 0, resp: 50, fault: 'ok' }];
    store.fallback = { req: 100_000, resp: 0, fault: 'hang' };
    const { keeper, signal } = await keeperOn(
      store,
      { leaseMs: 600, heartbeatMs: 200, storeTimeoutMs: 5_000 },
      clock,
    );
    const t0 = Date.now();
    let abortedAt = -1;
    for (let t = 0; t < 1_500; t++) {
      await vi.advanceTimersByTimeAsync(1);
      if (Date.now() - t0 === 225) offset = 1_000;
      if (signal.aborted && abortedAt < 0) abortedAt = Date.now() - t0;
    }
    keeper.stop();
    expect(abortedAt).toBeGreaterThan(0);
    expect(abortedAt).toBeLessThanOrEqual(800);
  });

  it('held: not_owner on the older renewal answered after the newer ok loses the lease at once (running)', async () => {
    fakeAll();
    const store = new LinkStore();
    store.legs = [
      { req: 350, resp: 0, fault: 'ok' }, // sent 200, applied 550 (after the steal below): not_owner at 550
      { req: 0, resp: 10, fault: 'ok' }, // sent 400, applied 400: ok at 410
    ];
    store.fallback = { req: 0, resp: 0, fault: 'ok' };
    const { keeper, signal, lost } = await keeperOn(store, { leaseMs: 600, heartbeatMs: 200 });
    await vi.advanceTimersByTimeAsync(500);
    store.steal(KEY);
    await vi.advanceTimersByTimeAsync(60);
    expect(signal.aborted).toBe(true);
    expect(lost.map((l) => l.phase)).toEqual(['heartbeat']);
    const sent = store.sent;
    await vi.advanceTimersByTimeAsync(2_000);
    expect(store.sent).toBe(sent);
    keeper.stop();
  });

  it('held: an older renewal answered ok after the newer failed never moves the estimate past its own send + lease', async () => {
    fakeAll();
    const store = new LinkStore();
    store.legs = [
      { req: 250, resp: 100, fault: 'ok' }, // sent 200, applied 450 (deadline 1050), answered 550
      { req: 0, resp: 0, fault: 'throw' }, // sent 400, fails at once
    ];
    store.fallback = { req: 100_000, resp: 0, fault: 'hang' };
    const { keeper, signal } = await keeperOn(store, { leaseMs: 600, heartbeatMs: 200 });
    let abortedAt = -1;
    const t0 = Date.now();
    for (let t = 0; t < 1_500; t++) {
      await vi.advanceTimersByTimeAsync(1);
      if (signal.aborted && abortedAt < 0) abortedAt = Date.now() - t0;
    }
    keeper.stop();
    // estimate = 200 + 600 - 1 = 799 (the store's own deadline 1100 is later; the 1 ms core
    // allows for a store's whole-ms clock, edge34): aborted at 799.
    expect(abortedAt).toBe(799);
    expect(store.maxPending).toBeLessThanOrEqual(2);
  });
});

describe('leaserev: what the store sees (fake timers)', () => {
  // FINDING (LOW): "at most two renewals outstanding" holds only for what the keeper awaits.
  // A renewal past storeTimeoutMs counts as failed and is retried a fifth of the heartbeat
  // later, while the store (a stalled Redis, a connection's command queue) still holds the
  // earlier call. Lease 600 ms, heartbeat 200 ms, storeTimeoutMs 50, a store that never
  // answers: the store sees 5 extends outstanding before the lease is lost (bounded by the
  // lease while running; see the next test for finishing). Suggested fix: count a timed-out
  // renewal as outstanding until it settles (or until the lease estimate), or document the
  // bound as "per storeTimeoutMs".
  // fixed: the keeper counts store.extend calls until they settle (time limit or not) and sends none while two are unsettled.
  it('a silent store with a short storeTimeoutMs sees more than two extends outstanding', async () => {
    fakeAll();
    const store = new LinkStore();
    store.fallback = { req: 100_000, resp: 0, fault: 'hang' };
    const { keeper, signal } = await keeperOn(store, {
      leaseMs: 600,
      heartbeatMs: 200,
      storeTimeoutMs: 50,
    });
    await vi.advanceTimersByTimeAsync(2_000);
    expect(signal.aborted).toBe(true);
    keeper.stop();
    // Observed: 5.
    expect(store.maxPending).toBeLessThanOrEqual(2);
  });

  // FINDING (MEDIUM): while finishing (the final write retried until the maximum hold),
  // renewals go on after the lease is lost, and every one that times out client-side is
  // retried a fifth of the heartbeat later: against a store that stopped answering the extends
  // it holds grow without bound until maxHoldMs (default 1 h). Here 5 s of a silent store with
  // lease 600 / heartbeat 200 / storeTimeoutMs 50 leave ~55 extends outstanding at the store
  // (with defaults: one every 7 s, ~500 in the hour). Suggested fix: once the lease is lost
  // while finishing, renew only with no renewal outstanding at the store (or back off
  // exponentially), and bound outstanding calls as in the previous finding.
  // fixed: a renewal due while two extends are unsettled at the store waits for one to settle; a silent store gets no more.
  it('finishing against a silent store: extends outstanding at the store grow without bound', async () => {
    fakeAll();
    const store = new LinkStore();
    store.fallback = { req: 100_000, resp: 0, fault: 'hang' };
    const { keeper, signal } = await keeperOn(store, {
      leaseMs: 600,
      heartbeatMs: 200,
      storeTimeoutMs: 50,
      maxHoldMs: 60_000,
    });
    keeper.phase = 'finishing';
    await vi.advanceTimersByTimeAsync(5_000);
    expect(signal.aborted).toBe(true);
    const pending = store.pending;
    keeper.stop();
    // Observed: ~55.
    expect(pending).toBeLessThanOrEqual(4);
  });

  it('held: a store that never answers (default storeTimeoutMs): exactly two extends outstanding, lost at the estimate, nothing after', async () => {
    fakeAll();
    const store = new LinkStore();
    store.fallback = { req: 100_000, resp: 0, fault: 'hang' };
    const { keeper, signal, lost } = await keeperOn(store, { leaseMs: 600, heartbeatMs: 200 });
    const t0 = Date.now();
    // (The estimate is 600 - 1: the 1 ms core allows for a store's whole-ms clock, edge34.)
    await vi.advanceTimersByTimeAsync(598);
    expect(signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(2);
    expect(signal.aborted).toBe(true);
    expect(lost[0]?.at).toBeLessThanOrEqual(t0 + 600);
    const sent = store.sent;
    expect(sent).toBe(2);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(store.sent).toBe(sent);
    expect(store.maxPending).toBe(2);
    keeper.stop();
  });

  it('held: maxHoldMs cuts every renewal, none after it, and the signal aborts by the hold end', async () => {
    fakeAll();
    const store = new LinkStore();
    store.fallback = { req: 150, resp: 150, fault: 'ok' };
    const leases: number[] = [];
    const extend = store.extend.bind(store);
    store.extend = (input) => {
      leases.push(input.leaseMs);
      return extend(input);
    };
    const { keeper, signal, lost } = await keeperOn(store, {
      leaseMs: 600,
      heartbeatMs: 200,
      maxHoldMs: 1_000,
    });
    const t0 = Date.now();
    let abortedAt = -1;
    for (let t = 0; t < 2_000; t++) {
      await vi.advanceTimersByTimeAsync(1);
      if (signal.aborted && abortedAt < 0) abortedAt = Date.now() - t0;
      // (The store may hold the lease past the hold end by a request's one-way delay: the
      // cut is relative to the send. Safe: the store holds longer than the keeper believes.)
    }
    keeper.stop();
    expect(abortedAt).toBeGreaterThan(0);
    expect(abortedAt).toBeLessThanOrEqual(1_001);
    expect(lost.map((l) => l.phase)).toEqual(['max_hold']);
    expect(store.maxPending).toBeLessThanOrEqual(2);
    for (const [i, l] of leases.entries()) expect(l, String(i)).toBeLessThanOrEqual(600);
  });

  it('held: abandon() with two renewals in flight: their answers schedule nothing, the watchdog still aborts', async () => {
    fakeAll();
    const store = new LinkStore();
    store.fallback = { req: 200, resp: 200, fault: 'ok' };
    const { keeper, signal } = await keeperOn(store, { leaseMs: 1_200, heartbeatMs: 300 });
    await vi.advanceTimersByTimeAsync(650); // sends at 300, 600: both out
    expect(store.pending).toBe(2);
    keeper.abandon();
    const sent = store.sent;
    await vi.advanceTimersByTimeAsync(5_000);
    expect(store.sent).toBe(sent);
    expect(signal.aborted).toBe(true);
  });
});

describe('leaserev: real timers', () => {
  it('held: a 2 s synchronous stall with a renewal in flight: no storm, at most two outstanding, the lease kept (nobody took it)', async () => {
    const store = new FakeStore();
    // Answered within the late-heartbeat grace (a fifth of the heartbeat, 60 ms): a renewal
    // slower than that after a stall loses the lease by design (documented).
    store.lateMs = 40;
    store.always.extend = 'late';
    const { keeper, signal, lost } = await keeperOn(store, { leaseMs: 900, heartbeatMs: 300 });
    await sleep(610); // a renewal out at ~600
    const until = Date.now() + 2_000;
    while (Date.now() < until) {
      // block the event loop
    }
    const callsAtStall = store.calls.extend;
    await sleep(600);
    keeper.stop();
    expect(store.maxInFlight.extend).toBeLessThanOrEqual(2);
    expect(store.calls.extend - callsAtStall).toBeLessThanOrEqual(4);
    expect(lost).toEqual([]);
    expect(signal.aborted).toBe(false);
  });

  it('held: the fast path adds no timer: a keeper on an armed shared queue, stopped before its heartbeat, calls setTimeout 0 times', async () => {
    const { FixedDelayTimers } = await import('../src/fixed-delay-timers.js');
    const store = new FakeStore();
    const shared = new FixedDelayTimers(10_000);
    const settings = resolveSettings({ store, leaseMs: 30_000 });
    const first = new LeaseKeeper(settings, KEY, OWNER, Date.now(), undefined, shared, 0);
    const spy = vi.spyOn(globalThis, 'setTimeout');
    for (let i = 0; i < 100; i++) {
      const k = new LeaseKeeper(settings, `${KEY}${i}`, OWNER, Date.now(), undefined, shared, 1);
      k.stop();
    }
    expect(spy).toHaveBeenCalledTimes(0);
    spy.mockRestore();
    first.stop();
  });
});

describe('leaserev: through execute() (fake timers, one FakeStore, a competitor polling)', () => {
  /**
   * Engine A renews over random legs and runs a long operation; engine B (same records,
   * acquisitions answered at once) tries the key every 10 ms. Returns the ms during which B's
   * operation had started while A's operation was still running with its signal not aborted.
   */
  async function race(legs: Leg[], leaseMs: number, heartbeatMs: number, storeTimeoutMs: number) {
    fakeAll();
    const store = new LinkStore();
    store.legs = legs.slice();
    store.fallback = { req: 0, resp: 0, fault: 'ok' };
    const idemA = createIdempotency<string>({ store, leaseMs, heartbeatMs, storeTimeoutMs });
    const idemB = createIdempotency<string>({ store, leaseMs: 60_000, heartbeatMs: false });
    let aRunning = false;
    let aSignal: AbortSignal | undefined;
    let bStartedAt = -1;
    let overlap = 0;
    const t0 = Date.now();
    const a = idemA
      .execute({ key: 'k' }, async ({ signal }) => {
        aRunning = true;
        aSignal = signal;
        // Runs its course whatever the signal says (the overlap counts only un-aborted ms).
        for (let i = 0; i < 3 * leaseMs; i++) await new Promise((r) => setTimeout(r, 1));
        aRunning = false;
        return 'A';
      })
      .catch(() => 'A failed');
    let done = false;
    void a.then(() => {
      done = true;
    });
    for (let t = 0; t < 4 * leaseMs && !done; t++) {
      await vi.advanceTimersByTimeAsync(1);
      if (t % 10 === 0 && bStartedAt < 0) {
        void idemB
          .execute({ key: 'k' }, async () => {
            bStartedAt = Date.now() - t0;
            return 'B';
          })
          .catch(() => undefined);
      }
      if (bStartedAt >= 0 && aRunning && aSignal && !aSignal.aborted) overlap++;
    }
    await vi.advanceTimersByTimeAsync(10_000);
    vi.useRealTimers();
    return { overlap, bStartedAt, maxPending: store.maxPending };
  }

  it('held: a competitor never runs while the first execution holds an un-aborted signal (100 random link sequences)', async () => {
    const stats = { runs: 0, bRan: 0 };
    await fc.assert(
      fc.asyncProperty(
        fc.array(legArb(400), { minLength: 1, maxLength: 10 }),
        fc.constantFrom(300, 600, 1_500),
        async (legs, leaseMs) => {
          const r = await race(legs, leaseMs, leaseMs / 3, 5_000);
          stats.runs++;
          if (r.bStartedAt >= 0) stats.bRan++;
          expect(r.overlap, JSON.stringify(r)).toBe(0);
        },
      ),
      { numRuns: 100, seed: 3 },
    );
    // The competitor did get the key in a good share of the runs (the attack had teeth).
    expect(stats.bRan).toBeGreaterThan(10);
  }, 60_000);

  // Same race, the link's failures time out client-side (storeTimeoutMs 30): retries come a
  // fifth of the heartbeat apart and may run just before the estimate (see the grace finding).
  // FINDING (HIGH, pre-existing; the grace finding above, through execute()): with
  // storeTimeoutMs 30 (grace min(30, heartbeat/5)) a renewal retried just before the estimate
  // moves the watchdog past it; the store's lease passes, the competitor acquires and runs
  // while the first execution's signal is still not aborted (observed: 2 of 100 runs, 8 ms
  // each, lease 300 ms, seed 5).
  // fixed for these runs by counting unsettled extends (timed-out renewals hold the next ones
  // back, so none is retried near the estimate); the grace itself: the targeted tests above.
  it('short storeTimeoutMs: a competitor runs while the first execution holds an un-aborted signal', async () => {
    const stats = { runs: 0, bRan: 0, overlaps: 0 };
    await fc.assert(
      fc.asyncProperty(
        fc.array(legArb(400), { minLength: 1, maxLength: 10 }),
        fc.constantFrom(300, 600, 1_500),
        async (legs, leaseMs) => {
          const r = await race(legs, leaseMs, leaseMs / 3, 30);
          stats.runs++;
          if (r.bStartedAt >= 0) stats.bRan++;
          if (r.overlap > 0) stats.overlaps++;
        },
      ),
      { numRuns: 100, seed: 5 },
    );
    expect(stats.bRan).toBeGreaterThan(10);
    expect(stats.overlaps).toBe(0);
  }, 60_000);
});

describe('leaserev: the documented bound (fake timers)', () => {
  it('held: a steady round trip under min(lease - heartbeat, (lease + heartbeat) / 2) never loses the lease (any heartbeat, applied at send or at answer)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 300, max: 3_000 }),
        fc.double({ min: 0.05, max: 0.95, noNaN: true }),
        fc.double({ min: 0, max: 0.97, noNaN: true }),
        fc.boolean(),
        async (leaseMs, hFrac, rFrac, appliedAtSend) => {
          const heartbeatMs = Math.max(1, Math.floor(leaseMs * hFrac));
          const bound = Math.min(leaseMs - heartbeatMs, (leaseMs + heartbeatMs) / 2);
          // At least 2 ms under the bound: the link's answer costs a timer tick (1 ms), and a
          // renewal answered in the estimate's own millisecond ties with the watchdog (armed
          // first, it fires first). The grace of a heartbeat that ran on time just before the
          // estimate used to cover that tick; it now keeps the watchdog at the estimate (the
          // leaserev HIGH finding: the estimate may be the store's own deadline). One more for
          // the 1 ms the estimate allows for a store's whole-ms clock (edge34).
          const r = Math.min(Math.floor(bound * rFrac), Math.ceil(bound) - 3);
          fakeAll();
          const store = new LinkStore();
          store.fallback = appliedAtSend
            ? { req: 0, resp: r, fault: 'ok' }
            : { req: r, resp: 0, fault: 'ok' };
          const { keeper, signal, lost } = await keeperOn(store, { leaseMs, heartbeatMs });
          await vi.advanceTimersByTimeAsync(leaseMs * 6);
          keeper.stop();
          vi.useRealTimers();
          expect(
            lost,
            JSON.stringify({ leaseMs, heartbeatMs, r, appliedAtSend, max: store.maxPending }),
          ).toEqual([]);
          expect(signal.aborted).toBe(false);
          expect(store.maxPending).toBeLessThanOrEqual(2);
        },
      ),
      { numRuns: 100, seed: 21 },
    );
  }, 60_000);
});

describe('leaserev: the documented bound, jittered (fake timers)', () => {
  it('held: every round trip (each different) under the bound: the lease is never lost', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 300, max: 3_000 }),
        fc.double({ min: 0.05, max: 0.95, noNaN: true }),
        fc.array(fc.double({ min: 0, max: 0.97, noNaN: true }), { minLength: 12, maxLength: 12 }),
        fc.boolean(),
        async (leaseMs, hFrac, rFracs, appliedAtSend) => {
          const heartbeatMs = Math.max(1, Math.floor(leaseMs * hFrac));
          const bound = Math.min(leaseMs - heartbeatMs, (leaseMs + heartbeatMs) / 2);
          fakeAll();
          const store = new LinkStore();
          store.legs = rFracs.map((f) => {
            // At least 3 ms under the bound (see the previous test).
            const r = Math.min(Math.floor(bound * f), Math.ceil(bound) - 3);
            return appliedAtSend
              ? { req: 0, resp: r, fault: 'ok' }
              : { req: r, resp: 0, fault: 'ok' };
          });
          store.fallback = { req: 0, resp: 0, fault: 'ok' };
          const { keeper, signal, lost } = await keeperOn(store, { leaseMs, heartbeatMs });
          const sentAt: number[] = [];
          const t0 = Date.now();
          await vi.advanceTimersByTimeAsync(leaseMs * 6);
          keeper.stop();
          vi.useRealTimers();
          expect(
            lost.map((l) => l.at - t0),
            JSON.stringify({
              leaseMs,
              heartbeatMs,
              bound,
              rs: store.legs.length,
              appliedAtSend,
              sentAt,
              rFracs: rFracs.map((f) => Math.floor(bound * f)),
            }),
          ).toEqual([]);
          expect(signal.aborted).toBe(false);
        },
      ),
      { numRuns: 60, seed: 22 },
    );
  }, 60_000);
});

describe('leaserev: a stall with a renewal in flight (real timers)', () => {
  // FINDING (MEDIUM): after the event loop was held up past the estimate, the late heartbeat
  // sends a renewal and moves the watchdog to the end of its grace (the documented rescue:
  // "renews before anything is called lost"). But the answer of the renewal that was in flight
  // through the stall is socket I/O, processed AFTER the timers phase: it lands (ok, newer than
  // anything landed), sets the estimate to its own send + lease (long passed) and re-arms the
  // watchdog at 0 ms, cancelling the grace: the lease is called lost although the late
  // renewal lands 10 ms later, well within the grace, and nobody took the key. With two
  // renewals outstanding (this change) a renewal is in flight across a stall far more often
  // than before. Suggested fix: in armWatchdog, never move a watchdog that a late beat pushed
  // to the end of its grace earlier while that beat's renewal is outstanding (keep
  // max(estimate, graceEnd) until that renewal answers).
  // fixed: until the late heartbeat's renewal settles, no answer moves the watchdog earlier than its grace.
  it('a 2 s stall, the in-flight renewal answered after the late heartbeat: the lease is called lost though the late renewal lands within the grace', async () => {
    const store = new LinkStore();
    store.legs = [
      { req: 0, resp: 5, fault: 'ok' }, // sent ~300
      { req: 0, resp: 15, fault: 'ok', io: true }, // sent ~600, answered (I/O) after the stall
    ];
    store.fallback = { req: 0, resp: 10, fault: 'ok' }; // the late renewal: 10 ms < grace 60 ms
    const { keeper, signal, lost } = await keeperOn(store, { leaseMs: 900, heartbeatMs: 300 });
    // Until the second renewal (due at ~600) is out, however late the timers run here.
    for (let waited = 0; store.sent < 2 && waited < 3_000; waited += 5) await sleep(5);
    expect(store.sent).toBe(2);
    const until = Date.now() + 2_000;
    while (Date.now() < until) {
      // the event loop is held up
    }
    await sleep(400);
    keeper.stop();
    expect(store.records.get(KEY)?.owner).toBe(OWNER);
    // Observed: [{ phase: 'heartbeat' }] right after the stall.
    expect(lost).toEqual([]);
    expect(signal.aborted).toBe(false);
  });
});

describe('leaserev: fast path through execute()', () => {
  it('held: a warm engine with a store answering at once: no keeper timer per execution (setTimeout calls per execute <= its store calls)', async () => {
    const store = new FakeStore();
    const idem = createIdempotency<string>({ store, leaseMs: 30_000 });
    // Warm up: the engine's shared heartbeat queue is armed by the first executions.
    const hold = idem.execute({ key: 'warm' }, async () => {
      await sleep(50);
      return 'w';
    });
    await idem.execute({ key: 'w0' }, async () => 'v');
    const spy = vi.spyOn(globalThis, 'setTimeout');
    const callsBefore = store.calls.acquire + store.calls.complete + store.calls.extend;
    for (let i = 0; i < 50; i++) await idem.execute({ key: `k${i}` }, async () => 'v');
    const storeCalls =
      store.calls.acquire + store.calls.complete + store.calls.extend - callsBefore;
    const timers = spy.mock.calls.length;
    spy.mockRestore();
    await hold;
    expect(store.calls.extend).toBe(0);
    expect(timers).toBeLessThanOrEqual(storeCalls);
  });
});

describe('leaserev: finishing through execute() (fake timers)', () => {
  // FINDING (MEDIUM; the finishing finding above through execute()): the store stops
  // answering (every extend and complete hangs) right as the operation ends. The final write
  // is retried in the background until maxHoldMs, and the keeper keeps renewing while
  // finishing, each extend timed out client-side after storeTimeoutMs and retried a fifth of
  // the heartbeat later: extends outstanding at the store grow linearly (observed ~55 after
  // 5 s with lease 600, heartbeat 200, storeTimeoutMs 50), not "at most two".
  // fixed: as above, through execute(): at most two extends unsettled at the store.
  it('a silent store while the final write is retried: extends outstanding at the store keep growing', async () => {
    fakeAll();
    const store = new FakeStore();
    const idem = createIdempotency<string>({
      store,
      leaseMs: 600,
      heartbeatMs: 200,
      storeTimeoutMs: 50,
      completionWaitMs: 100,
      maxHoldMs: 60_000,
    });
    const run = idem
      .execute({ key: 'k' }, async () => {
        await new Promise((r) => setTimeout(r, 100));
        store.always.extend = 'hang';
        store.always.complete = 'hang';
        return 'v';
      })
      .catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(5_000);
    const outstanding = store.inFlight.extend;
    store.always.complete = undefined;
    await vi.advanceTimersByTimeAsync(2_000);
    await run;
    // Observed: dozens.
    expect(outstanding).toBeLessThanOrEqual(4);
  });
});
