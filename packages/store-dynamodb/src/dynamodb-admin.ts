import {
  type Clock,
  type ForceReleaseResult,
  forcedReleaseOwner,
  inspectionOf,
  readClock,
  type StoreAdmin,
} from '@idem/core';
import {
  FORCE_RELEASE_CONDITION,
  FORCE_RELEASE_UPDATE,
  IN_PROGRESS,
  num,
  RELEASED,
} from './expressions.js';
import type { ItemRequests } from './item-requests.js';
import { checkSizes, decodeItem, type ItemSchema } from './record-item.js';

/**
 * The operator actions of a DynamoDB store: `inspect` is a consistent GetItem,
 * `forceRelease` one conditional UpdateItem, `delete` one DeleteItem (the fence goes with the
 * item: a later acquisition starts again at 1). Expiry by the store's clock.
 */
export function createDynamoDbAdmin(
  requests: ItemRequests,
  schema: ItemSchema,
  clock: Clock,
): StoreAdmin {
  return {
    async inspect(key) {
      checkSizes(schema, key);
      const raw = await requests.read(key);
      const now = readClock(clock);
      if (!raw || now >= raw.expiresAt) return undefined;
      return inspectionOf(raw, now, raw.outcome?.length ?? 0);
    },
    async forceRelease(key): Promise<ForceReleaseResult> {
      checkSizes(schema, key);
      const now = readClock(clock);
      const result = await requests.update(
        'forceRelease',
        key,
        FORCE_RELEASE_UPDATE,
        FORCE_RELEASE_CONDITION,
        {
          ':inProgress': IN_PROGRESS,
          ':released': RELEASED,
          ':owner': { S: forcedReleaseOwner() },
          ':one': num(1),
          ':now': num(now),
        },
        { onSuccess: true, onFailure: true },
      );
      if (result.ok) {
        const old = decodeItem(schema, result.old ?? {});
        return { ok: true, fence: old.fence + 1, previousOwner: old.owner };
      }
      const found = result.item ? decodeItem(schema, result.item) : await requests.read(key);
      return found && now < found.expiresAt
        ? { ok: false, reason: 'not_in_progress' }
        : { ok: false, reason: 'not_found' };
    },
    async delete(key) {
      checkSizes(schema, key);
      const old = await requests.remove(key);
      return { deleted: old !== undefined && readClock(clock) < old.expiresAt };
    },
  };
}
