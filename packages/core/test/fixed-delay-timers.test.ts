import { afterEach, describe, expect, it, vi } from 'vitest';
import { FixedDelayTimers, type TimedEntry } from '../src/fixed-delay-timers.js';
import { createIdempotency } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

/** An entry that records when (on `now`) it ran. */
function entry(now: () => number, ran: number[] = []): TimedEntry & { ran: number[] } {
  return {
    timerDue: 0,
    timerPrev: undefined,
    timerNext: undefined,
    timerQueued: false,
    ran,
    onTimer() {
      ran.push(now());
    },
  };
}

/** The fields a test reads of a queue's private state. */
const inside = (queue: FixedDelayTimers) =>
  queue as unknown as { first: TimedEntry | undefined; last: TimedEntry | undefined };

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('FixedDelayTimers under fake timers (setTimeout and performance faked)', () => {
  it('runs each entry exactly its delay after it was added, in order, once', () => {
    vi.useFakeTimers();
    const now = () => performance.now();
    const queue = new FixedDelayTimers(1_000);
    const start = now();
    const a = entry(now);
    const b = entry(now);
    const c = entry(now);
    queue.add(a);
    vi.advanceTimersByTime(300);
    queue.add(b);
    vi.advanceTimersByTime(450);
    queue.add(c);
    vi.advanceTimersByTime(249);
    expect(a.ran).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(a.ran).toEqual([start + 1_000]);
    vi.advanceTimersByTime(299);
    expect(b.ran).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(b.ran).toEqual([start + 1_300]);
    vi.advanceTimersByTime(450);
    expect(c.ran).toEqual([start + 1_750]);
    vi.advanceTimersByTime(10_000);
    expect([a.ran.length, b.ran.length, c.ran.length]).toEqual([1, 1, 1]);
    expect(queue.size).toBe(0);
    // Nothing left to wait for: the timer stopped.
    expect(queue.armed).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a removed entry never runs, and removing the first one does not make the next one late or early', () => {
    vi.useFakeTimers();
    const now = () => performance.now();
    const queue = new FixedDelayTimers(500);
    const start = now();
    const a = entry(now);
    const b = entry(now);
    queue.add(a);
    vi.advanceTimersByTime(100);
    queue.add(b);
    queue.remove(a);
    queue.remove(a); // twice: nothing happens
    vi.advanceTimersByTime(499);
    expect(b.ran).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(b.ran).toEqual([start + 600]);
    expect(a.ran).toEqual([]);
  });

  it('an entry added again (from its own callback) runs again one delay later', () => {
    vi.useFakeTimers();
    const now = () => performance.now();
    const queue = new FixedDelayTimers(200);
    const start = now();
    const ran: number[] = [];
    const again: TimedEntry = {
      ...entry(now, ran),
      onTimer() {
        ran.push(now());
        if (ran.length < 3) queue.add(again);
      },
    };
    const other = entry(now);
    queue.add(again);
    vi.advanceTimersByTime(50);
    queue.add(other);
    vi.advanceTimersByTime(1_000);
    expect(ran).toEqual([start + 200, start + 400, start + 600]);
    // Re-adding from a callback must not push the timer past an earlier entry.
    expect(other.ran).toEqual([start + 250]);
  });

  it('close() stops the timer and empties the queue: nothing runs after it', () => {
    vi.useFakeTimers();
    const now = () => performance.now();
    const queue = new FixedDelayTimers(100);
    const entries = Array.from({ length: 5 }, () => entry(now));
    for (const e of entries) queue.add(e);
    expect(vi.getTimerCount()).toBe(1);
    queue.close();
    expect(vi.getTimerCount()).toBe(0);
    expect(queue.size).toBe(0);
    vi.advanceTimersByTime(1_000);
    expect(entries.every((e) => e.ran.length === 0 && !e.timerQueued)).toBe(true);
  });

  it('holds one Node timer however many entries wait, and none once they are all removed and it fired', () => {
    vi.useFakeTimers();
    const now = () => performance.now();
    const queue = new FixedDelayTimers(1_000);
    const entries = Array.from({ length: 10_000 }, () => entry(now));
    for (const e of entries) queue.add(e);
    expect(vi.getTimerCount()).toBe(1);
    expect(queue.size).toBe(10_000);
    for (const e of entries) queue.remove(e);
    expect(queue.size).toBe(0);
    // Removed entries are unlinked: the queue keeps none of them alive.
    expect(inside(queue).first).toBeUndefined();
    expect(inside(queue).last).toBeUndefined();
    expect(entries.every((e) => e.timerPrev === undefined && e.timerNext === undefined)).toBe(true);
    vi.advanceTimersByTime(1_000);
    expect(vi.getTimerCount()).toBe(0);
    expect(queue.armed).toBe(false);
  });
});

describe('FixedDelayTimers with a clock that does not move with the timers', () => {
  it('runs later entries early (right after the first), never late', () => {
    // setTimeout faked, the queue's clock frozen: every entry looks added at the same time.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const frozen = 5;
    const queue = new FixedDelayTimers(1_000, () => frozen);
    let fake = 0;
    const at = () => fake;
    const a = entry(at);
    const b = entry(at);
    // `fake` is what the fake timers' clock says (set before each step it reaches).
    const step = () => {
      fake += 100;
      vi.advanceTimersByTime(100);
    };
    queue.add(a);
    for (let t = 0; t < 400; t += 100) step();
    queue.add(b);
    for (let t = 0; t < 2_000; t += 100) step();
    expect(a.ran).toEqual([1_000]);
    // Due at 1,400; run no later than that.
    expect(b.ran.length).toBe(1);
    expect(b.ran[0]).toBeLessThanOrEqual(1_400);
  });
});

describe('FixedDelayTimers with a clock ahead of the timers by a fraction of a ms', () => {
  // Node's timers count whole ms from the loop's time (floored) and drop a delay's fraction,
  // as the fake timers do (`setTimeout(f, 9.5)` runs at 9 ms): a timer armed for a fractional
  // delay on `performance.now()` runs up to about 2 ms early by that clock (measured: 1.7 ms on
  // Node 20, 22 and 24), whole ms up to 1 ms. Each timer the queue arms after one that ran early
  // must not add its own loss to the one before: the heartbeat test below read renewals 94.6 ms
  // apart under a 100 ms heartbeat on a loaded Node 24 lane.
  it('runs every entry less than 1 ms early, however many timers ran early before it', () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    // The queue's clock: the timers' whole ms plus what `ahead` says (set at each add; when a
    // timer runs the clock is on a whole ms, as the timers are).
    let ahead = 0;
    const clock = () => Date.now() + ahead;
    const queue = new FixedDelayTimers(100, clock);
    const added: number[] = [];
    const entries = Array.from({ length: 12 }, () => entry(clock));
    for (const [i, e] of entries.entries()) {
      ahead = i % 2 === 0 ? 0.4 : 0.9;
      added.push(clock());
      queue.add(e);
      ahead = 0;
      vi.advanceTimersByTime(10);
    }
    vi.advanceTimersByTime(1_000);
    entries.forEach((e, i) => {
      expect(e.ran.length).toBe(1);
      expect(e.ran[0]! - added[i]!).toBeGreaterThan(100 - 1);
    });
  });
});

describe('FixedDelayTimers under real timers', () => {
  it('runs entries no earlier than their delay, with one armed timer at a time that keeps nothing alive', async () => {
    // The test's own sleeps go around the spy: every setTimeout it sees is the queue's.
    const realSetTimeout = globalThis.setTimeout;
    const sleep = (ms: number) => new Promise((resolve) => realSetTimeout(resolve, ms));
    // The queue's timers: when each was armed and when it ran (performance.now()).
    const timers: Array<{ timer: NodeJS.Timeout; armedAt: number; ranAt: number | undefined }> = [];
    vi.spyOn(globalThis, 'setTimeout').mockImplementation(((callback: () => void, ms?: number) => {
      const record = {
        timer: undefined as unknown as NodeJS.Timeout,
        armedAt: 0,
        ranAt: 0 as number | undefined,
      };
      record.armedAt = performance.now();
      record.ranAt = undefined;
      record.timer = realSetTimeout(() => {
        record.ranAt = performance.now();
        callback();
      }, ms);
      timers.push(record);
      return record.timer;
    }) as unknown as typeof setTimeout);
    const queue = new FixedDelayTimers(40);
    const now = () => performance.now();
    const added: number[] = [];
    const order: number[] = [];
    const entries = Array.from({ length: 4 }, (_, i) => {
      const e = entry(now);
      const onTimer = e.onTimer.bind(e);
      e.onTimer = () => {
        order.push(i);
        onTimer();
      };
      return e;
    });
    for (const e of entries) {
      added.push(now());
      queue.add(e);
      await sleep(5);
    }
    // However slow the machine, every entry runs: waited for (bounded), not guessed.
    const deadline = now() + 10_000;
    while (entries.some((e) => e.ran.length === 0) && now() < deadline) await sleep(10);
    entries.forEach((e, i) => {
      expect(e.ran.length).toBe(1);
      // As for any setTimeout, Node counts the delay from the event loop's time, which can
      // be a few ms behind performance.now() when the entry is added (the loop's turn so far).
      expect(e.ran[0]! - added[i]!).toBeGreaterThanOrEqual(40 - 5);
    });
    expect(order).toEqual([0, 1, 2, 3]);
    // One Node timer at a time: armed by the first add, then only from the queue's own
    // firing (never by an add while one waits), so each was armed after the previous ran.
    // Entries added 5 ms apart are due apart: between 1 (all four added before the first
    // was due) and 4 firings, depending on how slow the machine is.
    expect(timers.length).toBeGreaterThanOrEqual(1);
    expect(timers.length).toBeLessThanOrEqual(entries.length);
    timers.forEach(({ timer, armedAt }, i) => {
      expect(timer.hasRef()).toBe(false);
      if (i > 0) {
        const previous = timers[i - 1]!.ranAt;
        expect(previous).toBeDefined();
        expect(armedAt).toBeGreaterThanOrEqual(previous!);
      }
    });
    expect(timers.every((t) => t.ranAt !== undefined)).toBe(true);
    expect(queue.armed).toBe(false);
    expect(queue.size).toBe(0);
  });
});

describe("the engine's heartbeats", () => {
  it('share one Node timer across executions, and still renew each lease on time', async () => {
    const store = new FakeStore();
    const idem = createIdempotency({ store, leaseMs: 400, heartbeatMs: 100 });
    const spy = vi.spyOn(globalThis, 'setTimeout');
    // Many short executions: none lives to its first heartbeat.
    for (let i = 0; i < 200; i++) await idem.execute({ key: `short-${i}` }, async () => i);
    const armedForShort = spy.mock.calls.filter((call) => call[1] === 100).length;
    expect(armedForShort).toBeLessThanOrEqual(1);
    expect(store.calls.extend).toBe(0);
    // Three long ones: each renews about every 100 ms, on the shared timer.
    // A heartbeat counts from when it was QUEUED: a keeper queues its next one just before it
    // sends a renewal (and its first one at the acquisition), so that is the floor, not the
    // previous renewal's arrival at the store, which a loaded machine can delay by a few ms
    // after the queueing (a preemption, a GC pause). Measured send to send, renewals read
    // 94.6 ms apart on a loaded Node 24 lane against a 95 ms floor (the queue's timers also
    // added up their early runs then: see 'a clock ahead of the timers' above). Recorded
    // here: each queueing (a spy on `add`, read before the queue reads its clock) and each
    // renewal's arrival at the store.
    const queued = new Map<string, number[]>();
    const add = FixedDelayTimers.prototype.add;
    vi.spyOn(FixedDelayTimers.prototype, 'add').mockImplementation(function (
      this: FixedDelayTimers,
      timed: TimedEntry,
    ) {
      const key = (timed as unknown as { key?: unknown }).key;
      if (typeof key === 'string') queued.set(key, [...(queued.get(key) ?? []), performance.now()]);
      add.call(this, timed);
    });
    const started = performance.now();
    // Per renewal: when it reached the store, and when the heartbeat that sent it was queued
    // (the one before its own, which it queued just before calling the store; for a first
    // renewal on a timer of its own, after a slow acquisition: the acquisition, after `started`).
    const renewals = new Map<string, Array<{ at: number; from: number }>>();
    const extend = store.extend.bind(store);
    store.extend = (input) => {
      const at = performance.now();
      const adds = queued.get(input.key) ?? [];
      const from = adds.length >= 2 ? adds[adds.length - 2]! : started;
      renewals.set(input.key, [...(renewals.get(input.key) ?? []), { at, from }]);
      return extend(input);
    };
    const long = await Promise.all(
      [0, 1, 2].map((i) =>
        idem.execute({ key: `long-${i}` }, async ({ signal }) => {
          await new Promise((resolve) => setTimeout(resolve, 600));
          return signal.aborted;
        }),
      ),
    );
    // Every renewal reached the store before this (none is sent once an execution ended).
    const ended = performance.now();
    // 600 ms (or more, on a loaded machine) under a 400 ms lease: renewed in time, never lost
    // (the file flaked in CI under the lanes' load with a 120 ms lease and 30 ms heartbeats,
    // where a 90 ms stall of the loop loses the lease; 300 ms of room now).
    expect(long.map((r) => r.value)).toEqual([false, false, false]);
    expect(renewals.size).toBe(3);
    // Never early: a renewal goes out no sooner than a heartbeat after its heartbeat was
    // queued, as a setTimeout of its own would: Node counts timers in whole ms from its loop's
    // time (up to 1 ms early on performance.now()), and on libuv's CLOCK_MONOTONIC_COARSE
    // where the kernel ticks every ms (up to 1 ms more).
    const TIMER_GRAIN_MS = 2;
    for (const times of renewals.values()) {
      // The first heartbeat is due (100 ms) long before the operation's 600 ms timer.
      expect(times.length).toBeGreaterThanOrEqual(1);
      for (const { at, from } of times)
        expect(at - from).toBeGreaterThanOrEqual(100 - TIMER_GRAIN_MS);
      // So no more renewals than the execution's time allows: each heartbeat is queued when the
      // one before it ran, and the first one no sooner than the execute call.
      expect(times.length).toBeLessThanOrEqual(
        Math.floor((ended - started) / (100 - TIMER_GRAIN_MS)),
      );
    }
  });
});
