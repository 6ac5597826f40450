import { encodeOutcome, ManualClock } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

const acquire = (key: string, owner = `o-${key}`, leaseMs = 1_000) => ({
  key,
  owner,
  fingerprint: 'fp',
  leaseMs,
  retentionMs: 10_000,
});

describe('memory store', () => {
  it('sweeps expired records and decides expiry on access', async () => {
    const clock = new ManualClock();
    const store = createMemoryStore({ clock, sweepIntervalMs: 0 });
    await store.acquire(acquire('x'));
    await store.complete({ key: 'x', owner: 'o-x', outcome: new Uint8Array(), retentionMs: 100 });
    clock.advance(99);
    expect(await store.get('x')).toBeDefined();
    clock.advance(1);
    expect(store.size).toBe(1);
    expect(await store.get('x')).toBeUndefined();
    await store.acquire(acquire('y'));
    clock.advance(1_000 + 10_000);
    expect(store.sweep()).toBe(1);
    expect(store.size).toBe(0);
  });

  it('runs the sweep on a timer that close() stops', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 10 });
    await store.acquire(acquire('t', 'o', 1));
    await store.release({ key: 't', owner: 'o', retentionMs: 1 });
    await new Promise((r) => setTimeout(r, 50));
    expect(store.size).toBe(0);
    await store.close();
    await store.acquire(acquire('u', 'o', 1));
    await store.release({ key: 'u', owner: 'o', retentionMs: 1 });
    await new Promise((r) => setTimeout(r, 50));
    expect(store.size).toBe(1);
  });

  it('isolates stored values from callers', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    await store.acquire(acquire('iso'));
    const outcome = encodeOutcome({ meta: {}, body: new Uint8Array([1, 2, 3]) });
    await store.complete({ key: 'iso', owner: 'o-iso', outcome, retentionMs: 10_000 });
    outcome.fill(0);
    const read = await store.get('iso');
    read!.outcome!.fill(0);
    read!.status = 'released';
    const again = await store.get('iso');
    expect(again?.status).toBe('completed');
    expect([...again!.outcome!.slice(-3)]).toEqual([1, 2, 3]);
  });

  it('refuses durations that are not finite and non-negative before touching a record', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const bad = [Number.NaN, -1, Number.POSITIVE_INFINITY];
    for (const value of bad) {
      await expect(store.acquire({ ...acquire('d'), leaseMs: value })).rejects.toMatchObject({
        code: 'INVALID_INPUT',
      });
      await expect(store.acquire({ ...acquire('d'), retentionMs: value })).rejects.toMatchObject({
        code: 'INVALID_INPUT',
      });
    }
    expect(store.size).toBe(0);
    await store.acquire(acquire('d'));
    const owned = { key: 'd', owner: 'o-d' };
    for (const value of bad) {
      const writes = [
        store.extend({ ...owned, leaseMs: value, retentionMs: 10 }),
        store.extend({ ...owned, leaseMs: 10, retentionMs: value }),
        store.release({ ...owned, retentionMs: value }),
        store.complete({ ...owned, outcome: new Uint8Array(), retentionMs: value }),
      ];
      for (const write of writes)
        await expect(write).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    }
    expect((await store.get('d'))?.status).toBe('in_progress');
  });

  it('refuses a bad maxEntries', () => {
    expect(() => createMemoryStore({ maxEntries: 0 })).toThrow(/maxEntries/);
  });
});
