import { afterEach, describe, expect, it, vi } from 'vitest';
import { shortProfile } from '../src/profile.js';
import type { Stage } from '../src/run-row.js';
import { CLEAN_WINDOW_MS, flaky } from '../src/scenarios.js';

/** A seeded generator (xorshift32), so each run of the row's dice is reproducible. */
function seeded(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

/** Runs the row's injector on fake timers; the phases it marked, with their start times. */
async function phases(seed: number, leaseMs: number, durationMs: number) {
  const marks: { at: number; what: string }[] = [];
  let restored = 0;
  vi.spyOn(Math, 'random').mockImplementation(seeded(seed));
  const stage = {
    profile: { ...shortProfile, leaseMs },
    store: { proxy: { setMode: () => undefined, dropSome: () => 0 } },
    mark: (what: string) => marks.push({ at: Date.now(), what }),
    restored: () => {
      restored += 1;
    },
  } as unknown as Stage;
  const start = Date.now();
  const done = flaky(stage, durationMs);
  await vi.advanceTimersByTimeAsync(durationMs + 5_000);
  await done;
  return { marks, start, end: Date.now(), restored };
}

afterEach(() => {
  vi.restoreAllMocks();
  vi.useRealTimers();
});

describe('faulty-proxy row: fault stretches', () => {
  it('from one clean window to the next, never more than half the lease (by the clock)', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const leaseMs = shortProfile.leaseMs;
    let longest = 0;
    let faults = 0;
    for (let seed = 1; seed <= 200; seed++) {
      const { marks, start, end, restored } = await phases(seed, leaseMs, shortProfile.flakyMs);
      expect(restored).toBe(1);
      // A stretch runs from the end of a clean window (or the start) to the next one's start.
      let stretchStart = start;
      marks.forEach(({ at, what }, i) => {
        const lasted = (marks[i + 1]?.at ?? end) - at;
        if (what === 'pass' && lasted >= CLEAN_WINDOW_MS) {
          longest = Math.max(longest, at - stretchStart);
          stretchStart = at + lasted;
        } else if (what !== 'pass') faults += 1;
      });
    }
    // The dice did chain faults (the bound was exercised), and no chain outlasted it.
    expect(faults).toBeGreaterThan(1_000);
    expect(longest).toBeGreaterThan(leaseMs / 2 - 100);
    expect(longest).toBeLessThanOrEqual(leaseMs / 2);
  }, 60_000);
});
