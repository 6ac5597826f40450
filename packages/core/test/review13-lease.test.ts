/**
 * review13: attacks on beat()'s grace (commit 51b9077): every heartbeat that runs past the
 * lease estimate, or within the grace before it (grace = min(storeTimeoutMs,
 * max(10, heartbeatMs/5))), moves the watchdog to max(grace, estimate - now) and sends the
 * owner-checked extend. Can the watchdog be pushed past the grace, past the maximum hold, or
 * can a lost lease come back? Driven on a LeaseKeeper directly (as late-heartbeat-review2).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import type { Clock } from '../src/clock.js';
import type { ExecutionReport } from '../src/execution-report.js';
import { LeaseKeeper } from '../src/lease-keeper.js';
import { resolveSettings } from '../src/settings.js';
import { FakeStore } from './support/fake-store.js';

const KEY = 'k';
const OWNER = 'me';

/** A clock that can be stepped back (or forward) like a wall clock under NTP. */
class SteppedClock implements Clock {
  offset = 0;
  now(): number {
    return Date.now() + this.offset;
  }
}

async function keeperOf(
  options: {
    leaseMs: number;
    heartbeatMs: number;
    maxHoldMs?: number;
    storeTimeoutMs?: number;
    clock?: Clock;
  },
  ago = 0,
  storeLeaseMs = 60_000,
) {
  const store = new FakeStore();
  await store.acquire({
    key: KEY,
    owner: OWNER,
    fingerprint: 'fp',
    leaseMs: storeLeaseMs,
    retentionMs: 60_000,
  });
  const lost: { phase: string; at: number }[] = [];
  const started = performance.now();
  const report = {
    leaseLost: (phase: string) => lost.push({ phase, at: performance.now() - started }),
  } as unknown as ExecutionReport;
  const settings = resolveSettings({ store, ...options });
  const keeper = new LeaseKeeper(settings, KEY, OWNER, settings.clock.now() - ago, report);
  const signal = keeper.signal;
  return { store, keeper, signal, lost, started };
}

describe('review13: beat() grace', () => {
  // FINDING (LOW, fixed: the watchdog is never moved past the hold): the maximum hold was enforced up to a grace late. When the estimate is the
  // hold's end (a renewal was cut to it, or maxHoldMs === leaseMs) and a heartbeat runs within
  // the grace before it, beat() moves the watchdog to now + grace, past the hold's end, and
  // sends a renewal that can never extend past the hold anyway (its lease is cut to what is
  // left): if it hangs or fails, `max_hold` fires up to a grace after maxHoldMs (here 80 ms
  // with grace 180), though the grace buys nothing: no answer can keep the lease past the
  // hold. Before 51b9077 the watchdog stayed at the hold's end.
  // Fix: in beat(), never move the watchdog past acquiredAt + maxHoldMs (skip the move when
  // leaseEstimate >= holdEnd, or cap the delay at holdEnd - now).
  it('the maximum hold is enforced at its end even when the last (cut) renewal hangs', async () => {
    // lease 1000, heartbeat 900 (grace 180), hold 1000: the first beat at ~900 renews for
    // the 100 ms left of the hold, and hangs.
    const { store, keeper, signal, lost } = await keeperOf({
      leaseMs: 1_000,
      heartbeatMs: 900,
      maxHoldMs: 1_000,
    });
    store.always.extend = 'hang';
    await sleep(1_040); // 40 ms past the maximum hold
    const abortedAtHoldEnd = signal.aborted;
    await sleep(100);
    keeper.stop();
    expect(store.calls.extend).toBe(1);
    expect(lost.map((l) => l.phase)).toEqual(['max_hold']);
    expect(abortedAtHoldEnd).toBe(true);
  });

  // Since the leaserev review a beat that runs ON TIME near the estimate (not held up by the
  // event loop) gets no grace: the estimate may be the store's own deadline. The beat at ~900
  // keeps the watchdog at the estimate (~1000), and its retry never pushes it.
  it('held: a within-grace beat whose extend fails at once is lost at the estimate, never pushed again by its retry', async () => {
    // lease 1000, heartbeat 900 (grace 180 = retry interval): the beat at ~900 runs on time,
    // the watchdog stays at ~1000; its extend throws; the retry (due ~1080) must not run
    // before the watchdog and push it.
    const { store, keeper, signal, lost } = await keeperOf({ leaseMs: 1_000, heartbeatMs: 900 });
    store.always.extend = 'throw';
    await sleep(960);
    expect(signal.aborted).toBe(false); // before the estimate
    await sleep(200); // ~1160: past the estimate and the retry's due time
    expect(signal.aborted).toBe(true);
    expect(lost).toHaveLength(1);
    expect(lost[0]?.phase).toBe('heartbeat');
    expect(lost[0]?.at).toBeLessThan(1_000 + 50);
    expect(store.calls.extend).toBe(1); // running: no retry after the loss
    keeper.stop();
  });

  it('held: the grace is not restarted by heartbeat after heartbeat whose extend answers ok but late', async () => {
    // lease 1000, heartbeat 850 (grace 170): every renewal answers (ok) after 100 ms, so
    // every beat runs within the grace before the estimate (100 + 850 + 170 >= 1000) and moves
    // the watchdog; the lease is really renewed each time (the estimate is taken from when
    // each was sent), so nothing is lost, and the watchdog follows the store's lease, not a
    // chain of graces.
    const { store, keeper, signal, lost } = await keeperOf({ leaseMs: 1_000, heartbeatMs: 850 });
    store.lateMs = 100;
    store.always.extend = 'late';
    await sleep(2_300);
    expect(store.calls.extend).toBeGreaterThanOrEqual(2);
    expect(lost).toEqual([]);
    expect(signal.aborted).toBe(false);
    // Now the store stops answering: lost within a grace of the next beat, not later.
    store.always.extend = 'hang';
    const from = performance.now();
    while (!signal.aborted && performance.now() - from < 2_000) await sleep(10);
    expect(signal.aborted).toBe(true);
    // At most one heartbeat (plus the in-flight late answer) and one grace away.
    expect(performance.now() - from).toBeLessThan(850 + 100 + 170 + 100);
    keeper.stop();
  });

  it('held: a clock stepped back does not push the watchdog past the real lease end', async () => {
    const clock = new SteppedClock();
    // lease 600, heartbeat 300 (grace 60).
    const { store, keeper, signal, lost } = await keeperOf({
      leaseMs: 600,
      heartbeatMs: 300,
      clock,
    });
    await sleep(350); // the first renewal at ~300 lands: estimate ~900
    expect(store.calls.extend).toBe(1);
    clock.offset = -10_000; // the wall clock steps back ten seconds
    store.always.extend = 'throw';
    await sleep(700); // ~1050: past the real estimate (~900) plus the grace
    expect(signal.aborted).toBe(true);
    expect(lost.map((l) => l.phase)).toEqual(['heartbeat']);
    expect(lost[0]?.at).toBeLessThan(900 + 60 + 60);
    keeper.stop();
  });

  it('held: finishing, a within-grace beat lost at the grace stays lost when a later renewal lands', async () => {
    // lease 1000, heartbeat 900 (grace 180): finishing keeps renewing after the loss.
    const { store, keeper, signal, lost } = await keeperOf({ leaseMs: 1_000, heartbeatMs: 900 });
    keeper.phase = 'finishing';
    store.next.extend.push('throw');
    await sleep(1_150);
    expect(signal.aborted).toBe(true);
    // The retries go on (finishing) and the next one lands: nobody took the key.
    await sleep(400);
    expect(store.calls.extend).toBeGreaterThanOrEqual(2);
    expect(signal.aborted).toBe(true);
    expect(lost).toHaveLength(1);
    keeper.stop();
  });

  it('held: abandon() during a within-grace beat whose extend hangs: lost at the grace, no more renewals', async () => {
    const { store, keeper, signal, lost } = await keeperOf({ leaseMs: 1_000, heartbeatMs: 900 });
    store.always.extend = 'hang';
    await sleep(920); // the beat at ~900 moved the watchdog to ~1080 and hangs
    keeper.abandon();
    await sleep(220);
    expect(signal.aborted).toBe(true);
    expect(lost.map((l) => l.phase)).toEqual(['heartbeat']);
    expect(lost[0]?.at).toBeLessThan(1_080 + 50);
    expect(store.calls.extend).toBe(1);
    keeper.stop();
  });

  it('held: a storeTimeoutMs shorter than the grace bounds the grace (the hanging extend times out first)', async () => {
    // heartbeat 900 would give a 180 ms grace; storeTimeoutMs 40 caps it at 40.
    const { store, keeper, signal, lost } = await keeperOf({
      leaseMs: 1_000,
      heartbeatMs: 900,
      storeTimeoutMs: 40,
    });
    store.always.extend = 'hang';
    // The beat at ~900 is not within 40 ms of the estimate: the watchdog stays at ~1000.
    await sleep(1_060);
    expect(signal.aborted).toBe(true);
    expect(lost[0]?.at).toBeLessThan(1_000 + 50);
    keeper.stop();
  });
});
