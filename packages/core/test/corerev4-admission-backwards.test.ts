/**
 * corerev4: an injected `now` that went back (`Date.now` stepped back by NTP, or a reading
 * that had jumped ahead and came back) was taken as it read. After a decrease at the reading
 * before the step, every later call looked as if it had started before that decrease, so no
 * congestion decreased the limit again until the clock caught up (an hour for an hour's step);
 * a call that ended before it started (negative latency) grew the limit as a fast answer.
 */
import { describe, expect, it } from 'vitest';
import { admissionOn, allAtOnce, scripted } from './support/admission-clock.js';

describe('corerev4: createAdmission with a clock that goes back', () => {
  it('a step back after a decrease does not hold back the decrease of later slow calls', async () => {
    const hour = 3_600_000;
    const admission = admissionOn(
      scripted([
        // Call 1: took 1000 ms (ten times the target): the limit decreases.
        hour,
        hour + 1000,
        // The clock steps back an hour. Call 2 straddles what is taken as the decrease.
        0,
        1000,
        // Call 3 starts after it and took 1000 ms: congestion, the limit decreases again.
        2000,
        3000,
      ]),
      16,
      16,
    );
    await admission.run('essential', async () => 'first');
    const afterFirst = admission.limit;
    expect(afterFirst).toBeLessThan(16);
    await admission.run('essential', async () => 'second');
    await admission.run('essential', async () => 'third');
    expect(admission.limit).toBeLessThan(afterFirst);
    expect(admission.inFlight).toBe(0);
  });

  it('a call that ended before it started grows nothing', async () => {
    // Twenty calls start at 10 000 and end at 0: the limit is in use, and no latency is known.
    const admission = admissionOn(
      scripted([...Array.from({ length: 20 }, () => 10_000), 0]),
      2,
      64,
    );
    await allAtOnce(admission, 20);
    expect(admission.limit).toBe(2);
    expect(admission.inFlight).toBe(0);
  });
});
