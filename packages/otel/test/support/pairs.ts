/** Events of one (storage key, fence) pair and checks, for the tests of the execute span table. */
import type { IdemEvent } from '@idem/core';
import { expect } from 'vitest';
import { ATTR, createOtelListener, SPAN } from '../../src/index.js';
import { countingOpen, type telemetry } from './telemetry.js';

export const SK = 'a'.repeat(64);
export const OP = 'POST /pay';

export const miss = (fence: number, storageKey = SK): IdemEvent => ({
  type: 'miss',
  storageKey,
  operation: OP,
  fence,
  takeover: false,
  durationMs: 1,
});

export const end = (
  result: 'completed' | 'released' | 'lease_lost' | 'abandoned',
  fence: number,
  storageKey = SK,
): IdemEvent => ({
  type: 'execution_end',
  storageKey,
  operation: OP,
  fence,
  result,
  durationMs: 1,
});

/** A listener of spans only on `t`, with at most `maxOpenExecutions` open, counting them. */
export function cappedOn(t: ReturnType<typeof telemetry>, maxOpenExecutions: number) {
  const counted = countingOpen(t.tracer, SPAN.execute);
  const listener = createOtelListener({
    tracer: counted.tracer,
    metrics: false,
    maxOpenExecutions,
  });
  return { t, counted, listener };
}

/**
 * Two acquisitions of `SK#5` (store A's held past the limit, then store B's): A releases, B
 * completes. No execute span may carry A's release (its result or its event), none is left open.
 */
export function firstReleasesSecondCompletes(
  t: ReturnType<typeof telemetry>,
  counted: { open(): number },
  listener: (event: IdemEvent) => void,
): void {
  listener({ type: 'released', storageKey: SK, operation: OP, fence: 5, durationMs: 1 });
  listener(end('released', 5));
  listener({
    type: 'completed',
    storageKey: SK,
    operation: OP,
    fence: 5,
    outcomeBytes: 1,
    durationMs: 1,
  });
  listener(end('completed', 5));
  const executes = t.spans(SPAN.execute);
  expect(executes.filter((s) => s.attributes[ATTR.result] === 'released')).toEqual([]);
  expect(executes.filter((s) => s.events.some((e) => e.name === 'idem.released'))).toEqual([]);
  expect(counted.open()).toBe(0);
}
