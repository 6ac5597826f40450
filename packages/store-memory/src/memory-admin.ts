import {
  type Clock,
  createStoreAdmin,
  meetsExpectation,
  readClock,
  type StoreAdmin,
} from '@idem/core';
import { newSlot, type RecordTable } from './record-table.js';

/**
 * The operator actions of a memory store: each runs synchronously inside, hence atomically
 * with respect to every other call. A deleted record's fence stays in the table's floor, so
 * fences keep growing after `delete` too. `forceRelease` and `delete` with an expectation
 * compare it with the record in that same synchronous step.
 */
export function createMemoryAdmin(table: RecordTable, clock: Clock): StoreAdmin {
  return createStoreAdmin({
    async read(key) {
      const now = readClock(clock);
      const slot = table.live(key, now);
      if (!slot) return { now, record: undefined };
      // Field by field: the slot holds more than the record (its accounting and queues).
      const { status, fingerprint, owner, fence, leaseUntil, expiresAt, outcome } = slot;
      const record = { status, fingerprint, owner, fence, leaseUntil, expiresAt };
      return { now, record: { ...record, outcomeBytes: outcome?.length } };
    },
    async forceRelease(key, owner, expected) {
      const now = readClock(clock);
      const slot = table.live(key, now);
      if (!slot) return 'not_found';
      const found = slot.record;
      if (found.status !== 'in_progress') return 'not_in_progress';
      if (!meetsExpectation(found, expected))
        return { changed: true, owner: found.owner, fence: found.fence };
      const fence = found.fence + 1;
      // A new slot: the owner string changes. The tombstone costs less than the in-progress
      // record it replaces (no outcome reserve), so it always fits.
      table.remove(slot);
      const { fingerprint, expiresAt, origin } = slot;
      const tombstone = {
        status: 'released' as const,
        fingerprint,
        owner,
        origin,
        fence,
        expiresAt,
      };
      table.insert(newSlot(slot.key, { ...tombstone, leaseUntil: now }));
      return { fence, previousOwner: found.owner };
    },
    async delete(key, _owner, expected) {
      const slot = table.live(key, readClock(clock));
      if (slot && !meetsExpectation(slot.record, expected)) {
        const { status, owner, fence } = slot.record;
        return { changed: true, status, owner, fence };
      }
      if (slot) table.remove(slot);
      // The origin an eviction kept goes too: a later acquisition begins a new request.
      table.forgetRemnantAt(key);
      return slot !== undefined;
    },
  });
}
