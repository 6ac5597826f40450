import { describe, expect, it } from 'vitest';
import { shortProfile } from '../src/profile.js';
import type { Stage } from '../src/run-row.js';
import { CLEAN_WINDOW_MS, flaky } from '../src/scenarios.js';

describe('faulty-proxy row: fault stretches', () => {
  it('no stretch of faults outlasts half the lease without a clean window between', async () => {
    const leaseMs = 600;
    // The phases as the row names them ('pass', 'drop', 'reset half', 'delay 40 ms', ...).
    const marks: { at: number; what: string }[] = [];
    let restored = 0;
    const proxy = { setMode: () => undefined, dropSome: () => 0 };
    const stage = {
      profile: { ...shortProfile, leaseMs },
      store: { proxy },
      mark: (what: string) => marks.push({ at: performance.now(), what }),
      restored: () => {
        restored += 1;
      },
    } as unknown as Stage;
    await flaky(stage, 6_000);
    expect(restored).toBe(1);
    const end = performance.now();
    // Time in faults between clean windows (a pass of CLEAN_WINDOW_MS or longer); a shorter
    // pass neither counts nor ends the stretch.
    const stretches: number[] = [];
    let stretch = 0;
    marks.forEach(({ at, what }, i) => {
      const lasted = (marks[i + 1]?.at ?? end) - at;
      if (what !== 'pass') stretch += lasted;
      else if (lasted >= CLEAN_WINDOW_MS) {
        stretches.push(stretch);
        stretch = 0;
      }
    });
    stretches.push(stretch);
    expect(marks.length).toBeGreaterThan(5);
    // Timers fire late by a few ms each; 100 ms covers a stretch of several phases.
    expect(Math.max(...stretches)).toBeLessThanOrEqual(leaseMs / 2 + 100);
  }, 20_000);
});
