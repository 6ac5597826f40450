/**
 * corerev3: an injected `now` that answers no finite time (NaN, Infinity) at a call's end was
 * taken as a reading. An infinite end decreased the limit and set the last decrease at
 * Infinity, so that no later congestion ever decreased it again; a NaN one grew the limit
 * whatever the latency. Such a reading now leaves the limit as it is, as a clock that throws.
 */
import { describe, expect, it } from 'vitest';
import { admissionOn, allAtOnce, scripted } from './support/admission-clock.js';

describe('corerev3: createAdmission with a clock that answers no finite time', () => {
  it('an end read as Infinity does not hold back the decrease of a later slow call', async () => {
    // Call 1: starts at 0, ends at Infinity. Call 2: starts at 1000, ends at 2000 (took 1000 ms,
    // ten times the target): congestion, the limit decreases.
    const admission = admissionOn(scripted([0, Number.POSITIVE_INFINITY, 1000, 2000]), 16, 16);
    await admission.run('essential', async () => 'first');
    const before = admission.limit;
    await admission.run('essential', async () => 'slow');
    expect(admission.limit).toBeLessThan(before);
    expect(admission.inFlight).toBe(0);
  });

  it('a NaN reading grows nothing: answers while the limit is in use, unmeasured, leave it as it is', async () => {
    const admission = admissionOn(() => Number.NaN, 2, 64);
    // Twenty calls in flight at once (essential calls are never shed): the limit is in use.
    await allAtOnce(admission, 20);
    expect(admission.limit).toBe(2);
    expect(admission.inFlight).toBe(0);
  });
});
