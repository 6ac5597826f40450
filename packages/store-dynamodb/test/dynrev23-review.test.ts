/**
 * dynrev23: adversarial review (storerev23) of the merge "wt/storefix" in store-dynamodb: every
 * clock but a ManualClock (`isManualClock`) is counted as a wall clock, so a renewal made while
 * it reads more than 100 ms behind elapsed time ends the lease where elapsed time puts it.
 * Attacks: a lease ending EARLIER than it should under any clock (fake timers swapping
 * `performance`, a clock that jumps forward and back, a plain object, a ManualClock of another
 * copy of core). Against DynamoDB Local; the stored lease is read through the fixture's raw
 * channel.
 */
import { createRequire } from 'node:module';
import { type Clock, type IdempotencyStore, ManualClock } from '@idem/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import { layouts } from './dynamodb-env.js';
import { setup, tables } from './store-fixture.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const layout = layouts[0]!;
const RETAIN = 60_000;

const acquire = (store: IdempotencyStore, leaseMs: number, owner = 'o') =>
  store.acquire({ key: 'k', fingerprint: 'f', owner, leaseMs, retentionMs: RETAIN });
const extend = (store: IdempotencyStore, leaseMs: number) =>
  store.extend({ key: 'k', owner: 'o', leaseMs, retentionMs: RETAIN });

/** A store with `clock` on `base` (a fresh fixture: its own client and key prefix). */
function withClock(clock?: Clock, base = setup(layout)) {
  const store = clock
    ? createDynamoDbStore({
        client: base.client,
        tableName: tables[layout.id],
        keyPrefix: base.prefix,
        clock,
      })
    : base.store;
  return {
    base,
    store,
    lease: async () =>
      Number((((await base.raw('k')) ?? {}) as Record<string, { N?: string }>).leaseUntil?.N),
  };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('dynrev23: whose elapsed time a renewal counts on', () => {
  // FINDING low (bounded time, test harnesses), fixed: the store measured elapsed time on
  // `performance.now()` itself. vitest's fake timers (the default `toFake` includes
  // `performance`) swap `performance` for one that counts from their install (about 0), while
  // the process's own counts from its start: a lease written under fake timers and renewed
  // after `vi.useRealTimers()` saw the whole uptime of the worker as elapsed since its last
  // write, and the renewal counted from that far ahead: the stored lease ended the uptime
  // later (7 s from now for a 3 s lease here; a crashed owner's key blocked that much longer;
  // never earlier: the renewal's condition checks the owner and the retention only). Correct:
  // elapsed time is measured on core's monotonic clock (the engine's, anchored at
  // `performance.timeOrigin`, read again when `performance` is swapped), so the renewal counts
  // from about now and ends the lease about a lease from now.
  for (const [name, clock] of [
    ['the default clock', undefined],
    ['a plain-object clock reading Date.now()', { now: () => Date.now() }],
  ] as const) {
    it(`${name}: a lease written under fake Date and performance, renewed under real timers, ends a lease from now (not refused, not later by the uptime)`, async () => {
      // The worker has been up for a while: its real performance.now() is well past the lease.
      while (performance.now() < 4_000) await sleep(100);
      const s = withClock(clock);
      vi.useFakeTimers({ toFake: ['Date', 'performance'], now: Date.now() });
      expect((await acquire(s.store, 3_000)).kind).toBe('acquired');
      vi.useRealTimers();
      const renewed = await extend(s.store, 3_000);
      const stored = await s.lease();
      expect(renewed).toEqual({ ok: true, leaseUntil: stored });
      expect(stored - Date.now()).toBeGreaterThan(3_000 - 1_000);
      expect(stored - Date.now()).toBeLessThanOrEqual(3_000);
    });
  }
});

describe('dynrev23: clocks that are not the system clock', () => {
  it('held: a ManualClock subclass of another copy of core (its CommonJS build) decides by its own reading: standing still while 400 ms pass, the renewal ends the lease a lease from its reading; advanced past it, another process takes the key over at once', async () => {
    const cjs = createRequire(import.meta.url)('@idem/core') as typeof import('@idem/core');
    expect(cjs.ManualClock).not.toBe(ManualClock);
    class TestClock extends cjs.ManualClock {}
    const clock = new TestClock(1_000_000);
    const a = withClock(clock);
    expect((await acquire(a.store, 1_000)).kind).toBe('acquired');
    await sleep(400);
    expect(await extend(a.store, 1_000)).toEqual({ ok: true, leaseUntil: 1_001_000 });
    expect(await a.lease()).toBe(1_001_000);
    // Another process on the same clock: the lease is live until the clock reaches its end.
    const b = withClock(clock, a.base);
    expect((await acquire(b.store, 1_000, 'b')).kind).toBe('found');
    clock.advance(1_000);
    expect((await acquire(b.store, 1_000, 'b')).kind).toBe('acquired');
  });

  it('held: an injected wall clock jumping forward 10 s and then corrected back: no renewal ends the stored lease earlier than a lease from now in real time', async () => {
    let offset = 0;
    const s = withClock({ now: () => Date.now() + offset });
    expect((await acquire(s.store, 3_000)).kind).toBe('acquired');
    const ends: number[] = [];
    for (const step of [0, 10_000, -10_000, 0]) {
      offset += step;
      await sleep(150);
      const renewed = await extend(s.store, 3_000);
      expect(renewed.ok).toBe(true);
      ends.push((await s.lease()) - Date.now());
    }
    // Real-time distance of each stored end: never short of the lease (a forward jump, once
    // stored, is kept by the later renewals: ends later, never earlier).
    for (const end of ends) expect(end).toBeGreaterThan(3_000 - 1_000);
    expect(Math.max(...ends)).toBeLessThanOrEqual(3_000 + 10_000);
  });

  // A test clock of one's own (not a ManualClock) is counted as a wall clock (README "Clock"):
  // its renewal, made while real time passed the lease but the clock did not, ends the lease
  // where elapsed time puts it: later than its reading would, never earlier, and never
  // refused for it (the renewal's condition checks the owner and the retention only).
  it("held: a stand-still clock of one's own (a plain object): 700 ms after a 500 ms lease it still reads within; the renewal is not refused, the stored lease ends later than its reading, never earlier", async () => {
    const at = 2_000_000;
    const s = withClock({ now: () => at });
    expect((await acquire(s.store, 500)).kind).toBe('acquired');
    await sleep(700);
    const b = withClock({ now: () => at }, s.base);
    expect((await acquire(b.store, 500, 'b')).kind).toBe('found');
    const renewed = await extend(s.store, 500);
    expect(renewed.ok).toBe(true);
    const stored = await s.lease();
    expect(stored).toBeGreaterThanOrEqual(at + 700 + 500);
    expect(renewed).toEqual({ ok: true, leaseUntil: stored });
    expect((await acquire(b.store, 500, 'b')).kind).toBe('found');
  });
});
