/**
 * review11: attacks on the late first heartbeat (commit 849dc97): a first heartbeat that runs
 * past the lease estimate now asks the store (owner-checked extend) before calling the lease
 * lost, with no watchdog armed while that renewal is awaited.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { createIdempotency, type IdemEvent, LeaseLostError } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';
import { holdLoop, only, takeOver } from './support/held-loop.js';

const LEASE_MS = 100;

/** Waits up to `ms` for `signal` to abort; whether it did. */
async function abortedWithin(signal: AbortSignal, ms: number): Promise<boolean> {
  if (signal.aborted) return true;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
  return signal.aborted;
}

describe('review11: late first heartbeat', () => {
  // FIXED (was a DEFECT, exactly-once (a)): a late renewal now gets a grace of a fifth of the heartbeat. the late renewal is awaited with no watchdog, bounded only by
  // storeTimeoutMs (default 5 s, here 50 leases). When the extend does not answer (a stalled
  // connection of this process) while another process takes the passed lease over, this
  // execution keeps running un-aborted for up to storeTimeoutMs beside the new owner. Before
  // 849dc97 it aborted at once; an on-time heartbeat whose extend hangs aborts at the lease
  // estimate (see the next test). Fix: while a late renewal is awaited, bound it by a short
  // grace (e.g. min(storeTimeoutMs, heartbeatMs)) or arm the watchdog at now + grace.
  it('a late first renewal that hangs keeps the signal un-aborted while another owner holds the key', async () => {
    const store = new FakeStore();
    store.next.extend.push('hang');
    const idem = createIdempotency({ store, leaseMs: LEASE_MS, heartbeatMs: 30 });
    let abortedSoon: boolean | undefined;
    await idem
      .execute({ key: 'partitioned' }, async ({ signal }) => {
        holdLoop(LEASE_MS * 2.5);
        // Let the late heartbeat start its (hanging) extend, then another owner takes over.
        await sleep(5);
        await takeOver(store);
        abortedSoon = await abortedWithin(signal, LEASE_MS * 5);
        if (signal.aborted) throw signal.reason;
        return 'ran beside another owner';
      })
      .catch(() => undefined);
    expect(only(store.records.values()).owner).toBe('another-owner');
    expect(abortedSoon).toBe(true);
  });

  it('contrast (held): an on-time first heartbeat whose extend hangs aborts at the lease estimate', async () => {
    const store = new FakeStore();
    store.always.extend = 'hang';
    const idem = createIdempotency({ store, leaseMs: LEASE_MS, heartbeatMs: 30 });
    let aborted: boolean | undefined;
    await idem
      .execute({ key: 'on-time' }, async ({ signal }) => {
        aborted = await abortedWithin(signal, LEASE_MS * 5);
        throw signal.reason ?? new Error('not aborted');
      })
      .catch(() => undefined);
    expect(aborted).toBe(true);
  });

  it('late first heartbeat past maxHoldMs (lease <= 0): aborted at once as max_hold, no extend', async () => {
    const store = new FakeStore();
    const events: IdemEvent[] = [];
    const idem = createIdempotency({
      store,
      leaseMs: LEASE_MS,
      heartbeatMs: 30,
      maxHoldMs: LEASE_MS,
      onEvent: (e) => events.push(e),
    });
    let aborted: boolean | undefined;
    await idem
      .execute({ key: 'max-hold' }, async ({ signal }) => {
        holdLoop(LEASE_MS * 2.5);
        aborted = await abortedWithin(signal, LEASE_MS * 3);
        throw signal.reason;
      })
      .catch(() => undefined);
    expect(aborted).toBe(true);
    expect(store.calls.extend).toBe(0);
    const lost = events.find((e) => e.type === 'lease_lost');
    expect(lost).toMatchObject({ phase: 'max_hold' });
  });

  it('after a late renewal lands, a second stall is still noticed (watchdog armed again)', async () => {
    const store = new FakeStore();
    const idem = createIdempotency({ store, leaseMs: LEASE_MS, heartbeatMs: 30 });
    let aborted: boolean | undefined;
    await idem
      .execute({ key: 'twice' }, async ({ signal }) => {
        holdLoop(LEASE_MS * 2.5);
        await sleep(20); // the late renewal lands
        expect(signal.aborted).toBe(false);
        expect(store.calls.extend).toBeGreaterThanOrEqual(1);
        // From now on every renewal hangs: the watchdog must abort at the new estimate.
        store.always.extend = 'hang';
        aborted = await abortedWithin(signal, LEASE_MS * 5);
        throw signal.reason;
      })
      .catch(() => undefined);
    expect(aborted).toBe(true);
  });

  it('late first renewal that is then taken over after landing: the next stall still aborts', async () => {
    const store = new FakeStore();
    const idem = createIdempotency({ store, leaseMs: LEASE_MS, heartbeatMs: 30 });
    const outcome = idem.execute({ key: 'taken-later' }, async ({ signal }) => {
      holdLoop(LEASE_MS * 2.5);
      await sleep(20);
      expect(signal.aborted).toBe(false);
      holdLoop(LEASE_MS * 2.5);
      await takeOver(store);
      expect(await abortedWithin(signal, LEASE_MS * 3)).toBe(true);
      throw signal.reason;
    });
    await expect(outcome).rejects.toBeInstanceOf(LeaseLostError);
    expect(only(store.records.values()).owner).toBe('another-owner');
  });

  it('heartbeatMs false and a held loop still aborts (watchdog from the start)', async () => {
    const store = new FakeStore();
    const idem = createIdempotency({ store, leaseMs: LEASE_MS, heartbeatMs: false });
    let aborted: boolean | undefined;
    await idem
      .execute({ key: 'no-beats' }, async ({ signal }) => {
        holdLoop(LEASE_MS * 1.5);
        aborted = await abortedWithin(signal, LEASE_MS * 2);
        throw signal.reason;
      })
      .catch(() => undefined);
    expect(aborted).toBe(true);
    expect(store.calls.extend).toBe(0);
  });

  it('finishing with a late first heartbeat: the complete applied but unanswered is retried and lands once', async () => {
    const store = new FakeStore();
    store.next.complete.push('hang_after');
    const idem = createIdempotency({
      store,
      leaseMs: LEASE_MS,
      heartbeatMs: 30,
      storeTimeoutMs: 50,
      completionWaitMs: 2_000,
    });
    let runs = 0;
    const result = await idem.execute({ key: 'finishing' }, async () => {
      runs++;
      // Returns at once after the hold: the complete is sent before the late heartbeat runs.
      holdLoop(LEASE_MS * 2.5);
      return 'v';
    });
    expect(result.value).toBe('v');
    expect(only(store.records.values()).status).toBe('completed');
    const again = await idem.execute({ key: 'finishing' }, async () => {
      runs++;
      return 'w';
    });
    expect(again).toMatchObject({ replayed: true, value: 'v' });
    expect(runs).toBe(1);
  });

  it('a late first renewal that fails aborts the signal promptly', async () => {
    const store = new FakeStore();
    store.next.extend.push('throw');
    const idem = createIdempotency({ store, leaseMs: LEASE_MS, heartbeatMs: 30 });
    let aborted: boolean | undefined;
    await idem
      .execute({ key: 'fails' }, async ({ signal }) => {
        holdLoop(LEASE_MS * 2.5);
        aborted = await abortedWithin(signal, LEASE_MS * 2);
        throw signal.reason;
      })
      .catch(() => undefined);
    expect(aborted).toBe(true);
  });
});
