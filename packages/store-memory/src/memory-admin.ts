import {
  type Clock,
  type ForceReleaseResult,
  forcedReleaseOwner,
  InvalidInputError,
  inspectionOf,
  readClock,
  type StoreAdmin,
} from '@idem/core';
import { newSlot, type RecordTable } from './record-table.js';

function checkKey(key: unknown): string {
  if (typeof key !== 'string') throw new InvalidInputError('An admin call needs a string key');
  return key;
}

/**
 * The operator actions of a memory store: each runs synchronously inside, hence atomically
 * with respect to every other call. A deleted record's fence stays in the table's floor, so
 * fences keep growing after `delete` too.
 */
export function createMemoryAdmin(table: RecordTable, clock: Clock): StoreAdmin {
  return {
    async inspect(key) {
      const now = readClock(clock);
      const slot = table.live(checkKey(key), now);
      if (!slot) return undefined;
      return inspectionOf(slot.record, now, slot.record.outcome?.length ?? 0);
    },
    async forceRelease(key): Promise<ForceReleaseResult> {
      const now = readClock(clock);
      const slot = table.live(checkKey(key), now);
      if (!slot) return { ok: false, reason: 'not_found' };
      const found = slot.record;
      if (found.status !== 'in_progress') return { ok: false, reason: 'not_in_progress' };
      const fence = found.fence + 1;
      // A new slot: the owner string changes. The tombstone costs less than the in-progress
      // record it replaces (no outcome reserve), so it always fits.
      table.remove(slot);
      table.insert(
        newSlot(slot.key, {
          status: 'released',
          fingerprint: found.fingerprint,
          owner: forcedReleaseOwner(),
          fence,
          leaseUntil: now,
          expiresAt: found.expiresAt,
        }),
      );
      return { ok: true, fence, previousOwner: found.owner };
    },
    async delete(key) {
      const slot = table.live(checkKey(key), readClock(clock));
      if (slot) table.remove(slot);
      return { deleted: slot !== undefined };
    },
  };
}
