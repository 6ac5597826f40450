import { type Clock, createStoreAdmin, readClock, type StoreAdmin } from '@idem/core';
import {
  COMPLETED,
  DELETE_CONDITION,
  DELETE_UPDATE,
  FORCE_RELEASE_CONDITION,
  FORCE_RELEASE_UPDATE,
  IN_PROGRESS,
  num,
  RELEASED,
} from './expressions.js';
import type { ItemRequests } from './item-requests.js';
import { checkSizes, decodeItem, type ItemSchema } from './record-item.js';

/**
 * The operator actions of a DynamoDB store: `inspect` is a consistent GetItem, `forceRelease`
 * and `delete` one conditional UpdateItem each. `delete` leaves an expired tombstone that
 * holds only the fence (no outcome, no fingerprint, an owner no executor holds, the TTL
 * attribute kept), so the next acquisition continues above it. Expiry by the store's clock.
 */
export function createDynamoDbAdmin(
  requests: ItemRequests,
  schema: ItemSchema,
  clock: Clock,
): StoreAdmin {
  return createStoreAdmin({
    checkKey: (key) => checkSizes(schema, key),
    async read(key) {
      const raw = await requests.read(key);
      const record = raw && { ...raw, outcomeBytes: raw.outcome?.length };
      return { now: readClock(clock), record };
    },
    async forceRelease(key, owner) {
      const now = readClock(clock);
      const result = await requests.update(
        'forceRelease',
        key,
        FORCE_RELEASE_UPDATE,
        FORCE_RELEASE_CONDITION,
        {
          ':inProgress': IN_PROGRESS,
          ':released': RELEASED,
          ':owner': { S: owner },
          ':one': num(1),
          ':now': num(now),
        },
        { onSuccess: true, onFailure: true },
      );
      if (result.ok) {
        const old = decodeItem(schema, result.old ?? {});
        return { fence: old.fence + 1, previousOwner: old.owner };
      }
      const found = result.item ? decodeItem(schema, result.item) : await requests.read(key);
      return found && now < found.expiresAt ? 'not_in_progress' : 'not_found';
    },
    async delete(key, owner) {
      const now = readClock(clock);
      const result = await requests.update(
        'delete',
        key,
        DELETE_UPDATE,
        DELETE_CONDITION,
        {
          ':inProgress': IN_PROGRESS,
          ':completed': COMPLETED,
          ':released': RELEASED,
          ':owner': { S: owner },
          ':none': { S: '' },
          ':now': num(now),
        },
        { onSuccess: true, onFailure: true },
      );
      if (!result.ok) {
        // An item that is not a record of this store: nothing was written, and it says so.
        if (result.item && Object.keys(result.item).length > 0) decodeItem(schema, result.item);
        // No item: nothing to delete, and nothing was created (the condition failed).
        return false;
      }
      return !!result.old && now < decodeItem(schema, result.old).expiresAt;
    },
  });
}
