/**
 * leaserev2: adversarial review of 170509b, a5b23f7, 674e21e, 9713a3b (lease keeper: at most
 * two unsettled extends, no grace for an on-time heartbeat, an older answer never cuts a grace
 * short, the lease counted on performance.now() with the default clock).
 */
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

const fakeAll = () =>
  vi.useFakeTimers({
    toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date', 'performance'],
  });

async function keeperOn(
  store: FakeStore,
  options: {
    leaseMs: number;
    heartbeatMs: number | false;
    maxHoldMs?: number;
    storeTimeoutMs?: number;
  },
) {
  const acquiredAt = Date.now();
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
  const settings = resolveSettings({ store, ...options });
  const keeper = new LeaseKeeper(settings, KEY, OWNER, acquiredAt, report, undefined, 0);
  const signal = keeper.signal;
  return { keeper, signal, lost, acquiredAt };
}

/** A store whose extends are settled by the test (or never). */
class ManualStore extends FakeStore {
  waiting: Array<{ input: ExtendInput; settle: (ok: boolean | 'reject') => void }> = [];
  sent = 0;
  override extend(input: ExtendInput): Promise<OwnerWriteResult> {
    this.sent++;
    return new Promise<OwnerWriteResult>((resolve, reject) => {
      this.waiting.push({
        input,
        settle: (how) => {
          if (how === 'reject') reject(new Error('extend failed (injected)'));
          else void super.extend(input).then(resolve, reject);
        },
      });
    });
  }
}

/** The fake clock behind vi's fake timers (@sinonjs/fake-timers). */
type SinonClock = { now: number; timers?: Record<string, { callAt: number }> };
const sinonClock = () => (Date as unknown as { clock: SinonClock }).clock;

/**
 * An event-loop stall of `ms`: every timer due within it runs at its end (as after a
 * synchronous stretch), microtasks between them as Node runs them.
 */
async function stall(ms: number): Promise<void> {
  const clock = sinonClock();
  for (const t of Object.values(clock.timers ?? {}))
    if (clock.now + ms > t.callAt) t.callAt = clock.now + ms;
  await vi.advanceTimersByTimeAsync(ms);
}

describe('leaserev2 (1): two extends that never settle (fake timers)', () => {
  for (const storeTimeoutMs of [20, 50, 2_000]) {
    it(`held: storeTimeoutMs ${storeTimeoutMs}: two sent, none after, aborted by the estimate, no timer left`, async () => {
      fakeAll();
      const store = new FakeStore();
      store.always.extend = 'hang';
      const { keeper, signal, lost, acquiredAt } = await keeperOn(store, {
        leaseMs: 600,
        heartbeatMs: 200,
        storeTimeoutMs,
      });
      await vi.advanceTimersByTimeAsync(5_000);
      expect(store.calls.extend).toBe(2);
      expect(signal.aborted).toBe(true);
      // No renewal landed: the estimate is the acquisition's send + lease (no grace).
      expect(lost.length).toBe(1);
      expect(lost[0]?.at).toBeLessThanOrEqual(acquiredAt + 600);
      await vi.advanceTimersByTimeAsync(60_000);
      expect(store.calls.extend).toBe(2);
      expect(vi.getTimerCount()).toBe(0);
      keeper.stop();
    });
  }

  it('held: the first renewal lands, then two hang forever: aborted by its send + lease', async () => {
    fakeAll();
    const store = new ManualStore();
    const { keeper, signal, lost, acquiredAt } = await keeperOn(store, {
      leaseMs: 600,
      heartbeatMs: 200,
      storeTimeoutMs: 30,
    });
    await vi.advanceTimersByTimeAsync(200);
    expect(store.waiting.length).toBe(1);
    const firstSentAt = Date.now();
    store.waiting[0]?.settle(true);
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(store.sent).toBe(3);
    expect(signal.aborted).toBe(true);
    expect(lost[0]?.at).toBeLessThanOrEqual(firstSentAt + 600);
    expect(lost[0]?.at).toBeGreaterThan(acquiredAt + 600);
    expect(vi.getTimerCount()).toBe(0);
    keeper.stop();
  });
});

describe('leaserev2 (1): two extends that never settle (real timers)', () => {
  it('held: lease 300, heartbeat 100, storeTimeoutMs 20: aborted by the estimate (+ timer slack), two sent', async () => {
    const store = new FakeStore();
    store.always.extend = 'hang';
    const { keeper, signal, lost, acquiredAt } = await keeperOn(store, {
      leaseMs: 300,
      heartbeatMs: 100,
      storeTimeoutMs: 20,
    });
    await new Promise((r) => setTimeout(r, 700));
    expect(signal.aborted).toBe(true);
    expect(store.calls.extend).toBe(2);
    // Timers run late under load, never early: the slack only covers the loop.
    expect((lost[0]?.at ?? Number.POSITIVE_INFINITY) - acquiredAt).toBeLessThan(300 + 150);
    keeper.stop();
  });
});

describe('leaserev2 (2): due + unsettled counter after stop()/abandon() (fake timers)', () => {
  it('held: stop() with two unsettled and a renewal held back: their settling sends nothing, no timer left', async () => {
    fakeAll();
    const store = new ManualStore();
    const { keeper } = await keeperOn(store, { leaseMs: 600, heartbeatMs: 200, storeTimeoutMs: 30 });
    await vi.advanceTimersByTimeAsync(450); // two sent (200, 400), both timed out
    expect(store.sent).toBe(2);
    await vi.advanceTimersByTimeAsync(60); // a retry held back (due)
    keeper.stop();
    for (const w of store.waiting) w.settle(true);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(store.sent).toBe(2);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('held: abandon() with a renewal held back: settling sends nothing, the watchdog still aborts, then no timer', async () => {
    fakeAll();
    const store = new ManualStore();
    const { keeper, signal, lost } = await keeperOn(store, {
      leaseMs: 600,
      heartbeatMs: 200,
      storeTimeoutMs: 30,
    });
    await vi.advanceTimersByTimeAsync(510);
    expect(store.sent).toBe(2);
    keeper.abandon();
    for (const w of store.waiting) w.settle(true); // both land: the estimate moves to 400 + 600
    await vi.advanceTimersByTimeAsync(5_000);
    expect(store.sent).toBe(2);
    expect(signal.aborted).toBe(true);
    expect(lost.length).toBe(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('held: abandon() then a rejected answer: no retry timer, no renewal', async () => {
    fakeAll();
    const store = new ManualStore();
    const { keeper, signal } = await keeperOn(store, { leaseMs: 600, heartbeatMs: 200 });
    await vi.advanceTimersByTimeAsync(410);
    keeper.abandon();
    for (const w of store.waiting) w.settle('reject');
    await vi.advanceTimersByTimeAsync(5_000);
    expect(store.sent).toBe(2);
    expect(signal.aborted).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });
});
