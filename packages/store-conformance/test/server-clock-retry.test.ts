import { ManualClock, systemClock } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { runCheck } from '../src/describe.js';
import type { ConformanceOptions } from '../src/index.js';
import { createNaiveStore } from './naive-store.js';

// A lease long enough that a loaded machine's late timers (a slip too) stay under its quarter
// where a test needs no slip, and a starved thread of 300 ms is one.
const server: ConformanceOptions = {
  clock: 'server',
  leaseMs: 1_000,
  createStore: () => createNaiveStore('none', systemClock, 'server'),
};
const injectable: ConformanceOptions = {
  clock: 'injectable',
  createStore: ({ clock }) => createNaiveStore('none', clock ?? new ManualClock(0), 'server'),
};

/** Holds the thread for `ms` without sleeping: store calls that took longer than expected. */
function starve(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

describe('a check on a store with its own clock runs again only when it did not get its timing', () => {
  it('a failure without a slip fails at once', async () => {
    let calls = 0;
    await expect(
      runCheck(server, async (h) => {
        calls += 1;
        await h.time.advance(30);
        throw new Error('broken store');
      }),
    ).rejects.toThrow('broken store');
    expect(calls).toBe(1);
  });

  it('a failure after store calls took more than a quarter of the lease runs again, and may pass', async () => {
    let calls = 0;
    await runCheck(server, async (h) => {
      calls += 1;
      await h.time.advance(20);
      if (calls === 1) {
        starve(300);
        throw new Error('lease judged passed');
      }
    });
    expect(calls).toBe(2);
  });

  it('a check that fails every attempt fails with its last error, after three attempts', async () => {
    let calls = 0;
    await expect(
      runCheck(server, async () => {
        calls += 1;
        starve(300);
        throw new Error(`attempt ${calls}`);
      }),
    ).rejects.toThrow('attempt 3');
    expect(calls).toBe(3);
  });

  it('the sleeps themselves are not a slip: a long advance with a failure still fails at once', async () => {
    let calls = 0;
    await expect(
      runCheck(server, async (h) => {
        calls += 1;
        await h.time.advance(200);
        throw new Error('broken store');
      }),
    ).rejects.toThrow('broken store');
    expect(calls).toBe(1);
  });

  it('an injectable clock never retries (its time does not slip)', async () => {
    let calls = 0;
    await expect(
      runCheck(injectable, async () => {
        calls += 1;
        starve(300);
        throw new Error('broken store');
      }),
    ).rejects.toThrow('broken store');
    expect(calls).toBe(1);
  });
});
