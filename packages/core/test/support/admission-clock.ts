import { expect } from 'vitest';
import { type Admission, createAdmission } from '../../src/index.js';
import { gate } from './settle.js';

/** An admission of `initialLimit` slots (up to `maxLimit`), a 100 ms target, on `now`. */
export function admissionOn(now: () => number, initialLimit: number, maxLimit: number) {
  return createAdmission({ targetLatencyMs: 100, initialLimit, minLimit: 1, maxLimit, now });
}

/** A clock answering `readings` in turn (then the last one again). */
export function scripted(readings: number[]) {
  let at = 0;
  return () => readings[Math.min(at++, readings.length - 1)] as number;
}

/**
 * Runs `count` essential calls at once (never shed) on `admission`, so that its limit is in
 * use, and answers them together; resolves once all have settled.
 */
export async function allAtOnce(admission: Admission, count: number): Promise<void> {
  const opened = gate();
  const calls = Array.from({ length: count }, () =>
    admission.run('essential', () => opened.promise),
  );
  expect(admission.inFlight).toBe(count);
  opened.open('done');
  await Promise.all(calls);
}
