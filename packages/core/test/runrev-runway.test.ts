/**
 * runrev: the review of the latrev fixes (a runway judged where the operation starts, no
 * held-up grace for a heartbeat due close to the estimate). Each test failed on the code it
 * names and passes now:
 * - a keeper made late after its answer (a `miss` listener held the loop) queued its first
 *   heartbeat a whole interval after that hold, past the estimate, with no watchdog armed;
 * - a slow acquisition (over a tenth of the heartbeat) took the grace from its first
 *   heartbeat: a stall then called a lease nobody took lost, and a retry ran again;
 * - a heartbeat due within a grace of a STALE estimate (a renewal still in flight) lost its
 *   grace: held up, it let the watchdog fire before that renewal landed;
 * - execute's refusal at the runway gave the key back with one release: a release that
 *   failed once left the key held for the lease.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import type { ExecutionReport } from '../src/execution-report.js';
import { createIdempotency, InProgressError, LeaseLostError } from '../src/index.js';
import { LeaseKeeper } from '../src/lease-keeper.js';
import { resolveSettings } from '../src/settings.js';
import { FakeStore } from './support/fake-store.js';
import { holdLoop, slowAnswers } from './support/held-loop.js';

const request = { key: 'k', scope: { principal: 'p' } };

describe('runrev: the first heartbeat counts from the send, not from when the keeper was made', () => {
  it('a miss listener that holds the loop 800 of a 1000 ms lease: the lease is renewed before it passes, a competitor at 1050 ms finds it in progress', async () => {
    const base = new FakeStore();
    const startedAt = performance.now();
    const idem = createIdempotency<string>({
      store: base,
      leaseMs: 1_000, // default heartbeat: a third of it; the runway ends at 900 ms
      storeTimeoutMs: 5_000,
      onEvent: (event) => {
        if (event.type === 'miss') holdLoop(800);
      },
    });
    let signal: AbortSignal | undefined;
    const first = idem.execute(request, async (ctx) => {
      signal = ctx.signal;
      await sleep(Math.max(0, 1_300 - (performance.now() - startedAt)));
      return 'first';
    });
    await sleep(Math.max(0, 1_050 - (performance.now() - startedAt)));
    const abortedAtCompetitor = signal?.aborted;
    const second = createIdempotency<string>({ store: base, leaseMs: 1_000, heartbeatMs: false });
    let secondRan = false;
    const competitor = await second
      .execute(request, async () => {
        secondRan = true;
        return 'second';
      })
      .catch((e: unknown) => e);
    // Before the fix the first heartbeat was queued at 800 + 333 ms: at 1050 the store's
    // deadline had passed, the competitor took the key over and ran beside an operation
    // whose signal was live.
    expect(secondRan).toBe(false);
    expect(competitor).toBeInstanceOf(InProgressError);
    expect(abortedAtCompetitor).toBe(false);
    await expect(first).resolves.toEqual({ value: 'first', replayed: false });
    expect(base.calls.extend).toBeGreaterThanOrEqual(1);
    await idem.drain(2_000);
  });
});

describe('runrev: a slow acquisition keeps the held-up heartbeat grace', () => {
  it('acquired in 150 ms, its first heartbeat held up to just before the estimate and its renewal answered 80 ms later: the lease is kept, the outcome recorded, a retry replays', async () => {
    const base = new FakeStore();
    // The acquire answered 150 ms after its send, every renewal 80 ms after its send.
    const store = slowAnswers(base, 150, 80);
    const idem = createIdempotency<string>({
      store,
      leaseMs: 3_000,
      heartbeatMs: 1_000, // a grace of 200 ms for a held-up heartbeat
      storeTimeoutMs: 5_000,
    });
    const startedAt = performance.now();
    let signal: AbortSignal | undefined;
    let runs = 0;
    const first = await idem
      .execute(request, async (ctx) => {
        runs++;
        signal = ctx.signal;
        // A stall: the first heartbeat (due 1000 ms after the send) runs at ~2950 ms, its
        // renewal lands at ~3030, past the estimate (3000) but within the grace.
        holdLoop(Math.max(0, 2_950 - (performance.now() - startedAt)));
        await sleep(200);
        return 'first';
      })
      .catch((e: unknown) => e);
    expect(first).toEqual({ value: 'first', replayed: false });
    expect(signal?.aborted).toBe(false);
    const retry = await idem.execute(request, async () => {
      runs++;
      return 'again';
    });
    expect(retry).toEqual({ value: 'first', replayed: true });
    expect(runs).toBe(1);
    await idem.drain(2_000);
  });
});

describe('runrev: a heartbeat is judged against the estimate of the renewal in flight', () => {
  it('heartbeat 950 of a 2000 ms lease, the first renewal answered 1080 ms after its send, the second heartbeat held up: no loss', async () => {
    const store = new FakeStore();
    await store.acquire({
      key: 'k',
      owner: 'me',
      fingerprint: 'fp',
      leaseMs: 60_000,
      retentionMs: 60_000,
    });
    store.always.extend = 'late';
    store.lateMs = 1_080;
    const lost: string[] = [];
    const report = { leaseLost: (phase: string) => lost.push(phase) } as unknown as ExecutionReport;
    const settings = resolveSettings({
      store,
      leaseMs: 2_000,
      heartbeatMs: 950, // a grace of 190 ms
      storeTimeoutMs: 5_000,
    });
    const t0 = performance.now();
    const keeper = new LeaseKeeper(settings, 'k', 'me', settings.clock.now(), report);
    const signal = keeper.signal;
    // The second heartbeat is due at ~1900 ms (a heartbeat after the first renewal's send);
    // the loop is held from 1850 to 1990 ms, so it runs ~90 ms late, with the first renewal
    // (landing at ~2030, estimate then ~2950) still in flight and the old estimate at 2000.
    await sleep(Math.max(0, 1_850 - (performance.now() - t0)));
    holdLoop(Math.max(0, 1_990 - (performance.now() - t0)));
    await sleep(Math.max(0, 2_300 - (performance.now() - t0)));
    keeper.stop();
    // Before the fix: judged against the estimate of 2000 ms, the held-up heartbeat got no
    // grace and the watchdog called the lease lost at 2000, before the renewal landed.
    expect(lost).toEqual([]);
    expect(signal.aborted).toBe(false);
    expect(store.calls.extend).toBe(2);
  });
});

describe("runrev: execute's refusal at the runway gives the key back with retries", () => {
  it('a release that fails once: retried in the background, the key is free well before its lease passes', async () => {
    const base = new FakeStore();
    base.next.release.push('throw');
    const idem = createIdempotency<string>({
      store: base,
      leaseMs: 1_000,
      heartbeatMs: false,
      storeTimeoutMs: 5_000,
      // Queued by the listener: runs after the acquisition's own runway check (right after
      // the event), before the operation starts.
      onEvent: (event) => {
        if (event.type === 'miss') queueMicrotask(() => holdLoop(950));
      },
    });
    let ran = false;
    const error = await idem
      .execute(request, async () => {
        ran = true;
        return 'first';
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LeaseLostError);
    expect(ran).toBe(false);
    await idem.drain(2_000);
    // The first release failed; the give-back released it (before the fix: one call only,
    // the record in progress until its lease passed).
    expect(base.calls.release).toBeGreaterThanOrEqual(2);
    const record = [...base.records.values()][0];
    expect(record?.status).not.toBe('in_progress');
  });
});
