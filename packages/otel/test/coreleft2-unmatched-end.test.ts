// coreleft2: the table that counts acquisitions held without an execute span (past
// maxOpenExecutions) was a hashed count per slot, and any `execution_end` without an entry took
// one back from its slot. An end whose acquisition the listener never saw (a wrapper that
// samples events passed the end and dropped the miss) could so empty a slot another pair's
// acquisition was counted in: another store's acquisition of that pair then got a span, and
// the first one's end (its release) ended it, in the other request's trace. An end now takes
// back only what its own pair's acquisitions added.
import { afterEach, describe, expect, it } from 'vitest';
import { ATTR, SPAN } from '../src/index.js';
import { cappedOn, end, firstReleasesSecondCompletes, miss, SK } from './support/pairs.js';
import { telemetry } from './support/telemetry.js';

let current: ReturnType<typeof telemetry> | undefined;
afterEach(async () => {
  await current?.shutdown();
  current = undefined;
});

function capped(maxOpenExecutions: number) {
  current = telemetry();
  return cappedOn(current, maxOpenExecutions);
}

/**
 * A copy of the listener's slot hash (FNV-1a of `storageKey#fence`, 4,096 slots), to find a
 * pair sharing the slot of `SK#5`. The first test checks that the pair found does share it.
 */
function slotOf(key: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 0x01000193);
  return (hash >>> 0) & 4095;
}
function collidingKey(): string {
  const target = slotOf(`${SK}#5`);
  for (let i = 0; i < 1_000_000; i++) {
    const key = `c${i}`.padEnd(64, 'c');
    if (key !== SK && slotOf(`${key}#7`) === target) return key;
  }
  throw new Error('no colliding key found');
}
const OTHER = 'b'.repeat(64);

describe('coreleft2: execution_end without its miss', () => {
  const Q = collidingKey();

  it('(check) the pair found shares the slot: while it is held past the limit, SK#5 gets no span', () => {
    const { t, counted, listener } = capped(1);
    listener(miss(1, OTHER)); // takes the one open span
    listener(miss(7, Q)); // past the limit: counted in its slot
    listener(end('completed', 1, OTHER));
    listener(miss(5)); // the slot counts Q: no span
    expect(counted.open()).toBe(0);
    listener(end('completed', 5));
    listener(end('completed', 7, Q));
    // Q ended: the slot is free, SK#5 gets its span again.
    listener(miss(5));
    expect(counted.open()).toBe(1);
    listener(end('completed', 5));
    expect(counted.open()).toBe(0);
    expect(t.spans(SPAN.execute).at(-1)?.attributes[ATTR.result]).toBe('completed');
  });

  it("a stray end of another pair in the slot never frees it: the first holder's release stays out of the second's trace", () => {
    const { t, counted, listener } = capped(1);
    listener(miss(1, OTHER)); // takes the one open span
    listener(miss(5)); // store A: past the limit, no span, counted
    listener(end('completed', 7, Q)); // a stray end (its miss was dropped), same slot
    listener(end('completed', 1, OTHER)); // a span is free again
    listener(miss(5)); // store B, the same pair: A still holds it uncounted, so no span
    expect(counted.open()).toBe(0);
    // A releases (its events must land on no span of B's), B completes.
    firstReleasesSecondCompletes(t, counted, listener);
    // Both ended: the pair gets its span again.
    listener(miss(5));
    expect(counted.open()).toBe(1);
    listener(end('released', 5));
    expect(t.spans(SPAN.execute).at(-1)?.attributes[ATTR.result]).toBe('released');
  });

  it('a stray end of the pair itself, none held: nothing is taken back from a later holder', () => {
    const { counted, listener } = capped(1);
    listener(end('completed', 5)); // stray: never acquired here
    listener(miss(1, OTHER));
    listener(miss(5)); // past the limit: counted
    listener(end('completed', 1, OTHER));
    listener(miss(5)); // another store: no span while the first is counted
    expect(counted.open()).toBe(0);
    listener(end('completed', 5));
    listener(end('completed', 5));
    listener(miss(5));
    expect(counted.open()).toBe(1);
    listener(end('completed', 5));
    expect(counted.open()).toBe(0);
  });

  it('past 4,096 pairs held uncounted by name, their ends still free the table', () => {
    const { counted, listener } = capped(1);
    listener(miss(1, OTHER));
    const held = 5_000;
    for (let i = 0; i < held; i++) listener(miss(i + 10, `k${i}`.padEnd(64, 'k')));
    for (let i = 0; i < held; i++) listener(end('completed', i + 10, `k${i}`.padEnd(64, 'k')));
    listener(end('completed', 1, OTHER));
    // Every slot is free: each of these pairs gets its span.
    for (let i = 0; i < 50; i++) {
      listener(miss(i + 10, `k${i}`.padEnd(64, 'k')));
      expect(counted.open()).toBe(1);
      listener(end('completed', i + 10, `k${i}`.padEnd(64, 'k')));
    }
    expect(counted.open()).toBe(0);
  });
});
