import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newSlot, RecordTable } from '../src/record-table.js';
import { guardLoops, remnantAt } from './table-invariants.js';

// The loop guard turns an endless eviction loop into an error instead of a hung run.
let guard: ReturnType<typeof guardLoops>;
beforeAll(() => {
  guard = guardLoops();
});
afterAll(() => guard.restore());

describe('RecordTable.remove of a slot the table no longer holds', () => {
  it('still takes it out of the eviction queues, so an eviction loop ends', () => {
    const table = new RecordTable(2, 1_000_000);
    const released = {
      status: 'released',
      fingerprint: 'f',
      owner: 'o',
      fence: 1,
      leaseUntil: 0,
      expiresAt: 10_000,
    } as const;
    const stale = newSlot('k', { ...released });
    table.insert(stale);
    // A slip that must never happen (a second slot at the same key): the first one stays
    // queued as a tombstone while the map holds the second.
    table.insert(newSlot('k', { ...released, fence: 2 }));
    // Making room evicts tombstones; before, remove() returned early for the stale one and
    // the loop met it again for ever.
    expect(table.makeRoom(0, 2, 0)).toBe(true);
    // The stale slot left nothing; the table's own tombstone left its remnant (queued once).
    expect(table.queued).toBe(1);
    expect(table.remnantCount).toBe(1);
    expect(remnantAt(table, 'k')?.origin).toBe('o');
  }, 5_000);
});
