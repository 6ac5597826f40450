// The records of a store dropped without close() are collected, and its sweep timer then
// stops itself (the timer holds the table only weakly; before, it kept every record for the
// life of the process).
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ManualClock } from '@idem/core';
import { describe, expect, it, vi } from 'vitest';
import { createMemoryStore } from '../src/index.js';
import { probeTable } from './table-invariants.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('the sweep timer of a store nobody holds', () => {
  it('lets its records be collected, then clears itself', async () => {
    const made: unknown[] = [];
    const original = globalThis.setInterval;
    const spy = vi.spyOn(globalThis, 'setInterval').mockImplementation(((
      ...args: Parameters<typeof setInterval>
    ) => {
      const timer = original(...args);
      made.push(timer);
      return timer;
    }) as typeof setInterval);
    const cleared = vi.spyOn(globalThis, 'clearInterval');
    let ref: WeakRef<object>;
    try {
      // In a function of its own, so that nothing in this scope holds the store or its table.
      ref = await (async () => {
        const store = createMemoryStore({ clock: new ManualClock(), sweepIntervalMs: 5 });
        await store.acquire({
          key: 'k',
          owner: 'o',
          fingerprint: 'f',
          leaseMs: 1_000,
          retentionMs: 60_000,
        });
        return new WeakRef(probeTable(store));
      })();
    } finally {
      spy.mockRestore();
    }
    expect(made).toHaveLength(1);
    // Collected in jobs of their own: a deref() keeps its target for the rest of its job.
    for (let i = 0; i < 5; i++) {
      await sleep(20);
      gc();
    }
    await sleep(20);
    expect(ref.deref() === undefined, 'the records of a dropped store are collected').toBe(true);
    // The next tick finds the table gone and clears the timer.
    for (let i = 0; i < 50 && !cleared.mock.calls.some(([t]) => t === made[0]); i++)
      await sleep(10);
    expect(cleared.mock.calls.some(([t]) => t === made[0])).toBe(true);
    cleared.mockRestore();
  });

  it('a store still held keeps sweeping', async () => {
    const clock = new ManualClock();
    const store = createMemoryStore({ clock, sweepIntervalMs: 5 });
    await store.acquire({ key: 'k', owner: 'o', fingerprint: 'f', leaseMs: 1, retentionMs: 1 });
    expect(store.size).toBe(1);
    clock.advance(10);
    gc();
    for (let i = 0; i < 100 && store.size > 0; i++) await sleep(10);
    expect(store.size).toBe(0);
    await store.close();
  });
});
