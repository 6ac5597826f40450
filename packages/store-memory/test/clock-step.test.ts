/**
 * The default clock (`systemClock`, given or not) decides expiry on a monotonic clock: a
 * stepped wall clock neither hands a live lease to a competitor nor cuts a retention short
 * (the leaserev2 review: the engine's keeper counts elapsed time, the store counted the wall
 * clock). An injected clock is used as given.
 */
import { type Clock, createIdempotency, ManualClock, systemClock } from '@idem/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createMemoryStore, type MemoryStore } from '../src/index.js';

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

/** Steps `Date.now()` (and so `systemClock`) by `offset`. */
function stepDate(): { by: (ms: number) => void } {
  const orig = Date.now.bind(Date);
  let offset = 0;
  vi.spyOn(Date, 'now').mockImplementation(() => orig() + offset);
  return { by: (ms) => (offset += ms) };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const acquire = (store: MemoryStore, owner: string, leaseMs = 1_000, retentionMs = 60_000) =>
  store.acquire({ key: 'k', owner, fingerprint: 'fp', leaseMs, retentionMs });

const clocks: Array<[string, Clock | undefined]> = [
  ['no clock given', undefined],
  ['systemClock given', systemClock],
];

for (const [name, clock] of clocks) {
  describe(`the memory store, ${name}`, () => {
    it('Date.now() steps forward past the lease: the live lease is not handed to a competitor', async () => {
      const step = stepDate();
      const store = createMemoryStore({ clock, sweepIntervalMs: 0 });
      expect(await acquire(store, 'me', 1_000)).toMatchObject({ kind: 'acquired', fence: 1 });
      step.by(2_000);
      // Before: the competitor acquired (fence 2, takeover) 2 s early.
      expect(await acquire(store, 'thief')).toMatchObject({ kind: 'found' });
      expect(
        await store.extend({ key: 'k', owner: 'me', leaseMs: 1_000, retentionMs: 60_000 }),
      ).toMatchObject({ ok: true });
    });

    it('Date.now() steps back: the lease still passes by elapsed time', async () => {
      const step = stepDate();
      const store = createMemoryStore({ clock, sweepIntervalMs: 0 });
      await acquire(store, 'me', 50);
      step.by(-3_600_000);
      await sleep(80);
      // Before: the lease was live for another hour.
      expect(await acquire(store, 'thief')).toMatchObject({
        kind: 'acquired',
        fence: 2,
        takeover: true,
      });
    });

    it('Date.now() steps forward past the retention: the completed record is still replayed', async () => {
      const step = stepDate();
      const store = createMemoryStore({ clock, sweepIntervalMs: 0 });
      await acquire(store, 'me', 1_000, 1_000);
      expect(
        await store.complete({
          key: 'k',
          owner: 'me',
          outcome: new Uint8Array([1, 2, 3]),
          retentionMs: 1_000,
        }),
      ).toEqual({ ok: true });
      step.by(5_000);
      // Before: the record had expired and a retry acquired the key (a second execution).
      const found = await acquire(store, 'retry');
      expect(found.kind).toBe('found');
      if (found.kind === 'found') expect(found.record.status).toBe('completed');
      expect(store.sweep()).toBe(0);
      expect((await store.get('k'))?.status).toBe('completed');
    });

    it('reports deadlines that read as epoch ms while the wall clock has not stepped', async () => {
      const store = createMemoryStore({ clock, sweepIntervalMs: 0 });
      const before = Date.now();
      const got = await acquire(store, 'me', 1_000);
      expect(got.kind).toBe('acquired');
      if (got.kind === 'acquired') {
        expect(Math.abs(got.leaseUntil - (before + 1_000))).toBeLessThan(50);
      }
    });
  });
}

describe('the memory store with an injected clock', () => {
  it('is used as given: a ManualClock alone decides expiry', async () => {
    const manual = new ManualClock();
    const step = stepDate();
    const store = createMemoryStore({ clock: manual, sweepIntervalMs: 0 });
    await acquire(store, 'me', 1_000);
    step.by(10_000);
    expect(await acquire(store, 'thief')).toMatchObject({ kind: 'found' });
    manual.advance(1_000);
    expect(await acquire(store, 'thief')).toMatchObject({ kind: 'acquired', takeover: true });
  });

  it('an injected wall clock follows its steps (as given)', async () => {
    const step = stepDate();
    const store = createMemoryStore({ clock: { now: () => Date.now() }, sweepIntervalMs: 0 });
    await acquire(store, 'me', 1_000);
    step.by(2_000);
    expect(await acquire(store, 'thief')).toMatchObject({ kind: 'acquired', takeover: true });
  });
});

describe('the engine on the memory store, default clocks', () => {
  // The leaserev2 finding end to end: Date.now() steps forward 2 s while an execution runs
  // (lease 900 ms, heartbeats every 300 ms). Before, a second request with the same key
  // acquired it at once (a second execution, the first one's signal not aborted); now it
  // finds the key in progress while the first execution's heartbeats keep it.
  it('Date.now() steps forward 2 s during an execution: a retry gets IN_PROGRESS, the operation runs once', async () => {
    const step = stepDate();
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const idem = createIdempotency<string>({ store, leaseMs: 900, heartbeatMs: 300 });
    let runs = 0;
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let aborted = false;
    const first = idem.execute({ key: 'k' }, async ({ signal }) => {
      runs++;
      signal.addEventListener('abort', () => {
        aborted = true;
      });
      await gate;
      return 'v';
    });
    await sleep(50);
    step.by(2_000);
    const retry = await idem
      .execute({ key: 'k' }, async () => {
        runs++;
        return 'w';
      })
      .catch((e: unknown) => e);
    expect(retry).toMatchObject({ code: 'IN_PROGRESS' });
    await sleep(700); // past the lease: the heartbeats kept it
    expect(aborted).toBe(false);
    release();
    expect(await first).toEqual({ value: 'v', replayed: false });
    expect(await idem.execute({ key: 'k' }, async () => 'x')).toEqual({
      value: 'v',
      replayed: true,
    });
    expect(runs).toBe(1);
    await store.close();
  });
});
