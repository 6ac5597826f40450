import { createStoreAdmin, type StoreAdmin } from '@idem/core';
import { integer, type Reply, statusCode, statusOf, toRecord } from './redis-reply.js';

/** The admin scripts as callable commands (see admin-scripts.ts). */
export interface AdminCommands {
  inspect(key: string): Promise<Reply[]>;
  forceRelease(
    key: string,
    fenceKey: string,
    owner: string,
    fenceMemoryMs: string,
    expectedOwner: string,
    expectedFence: string,
  ): Promise<Reply[]>;
  delete(
    key: string,
    fenceMemoryMs: string,
    expectedStatus: string,
    expectedOwner: string,
    expectedFence: string,
  ): Promise<Reply[]>;
}

/**
 * The operator actions of a Redis store: one script each (one round trip, atomic, Redis's
 * clock). `call` wraps each like the store's own calls; `redisKey` checks the storage key.
 */
export function createRedisAdmin(
  commands: AdminCommands,
  redisKey: (storageKey: string) => string,
  fenceMemory: string,
  call: <T>(operation: string, run: () => Promise<T>) => Promise<T>,
): StoreAdmin {
  return createStoreAdmin({
    checkKey: redisKey,
    async read(storageKey) {
      const reply = await call('inspect', () => commands.inspect(redisKey(storageKey)));
      if (reply.length < 2) return { now: integer(reply[0]) };
      const { outcome, ...record } = toRecord(reply[1], false);
      // The script sends the record without its outcome, and the outcome's length.
      const outcomeBytes = reply.length > 2 ? integer(reply[2]) : outcome?.length;
      return { now: integer(reply[0]), record: { ...record, outcomeBytes } };
    },
    async forceRelease(storageKey, owner, expected) {
      const key = redisKey(storageKey);
      const reply = await call('forceRelease', () =>
        commands.forceRelease(key, `${key}:fence`, owner, fenceMemory, ...expecting(expected)),
      );
      const code = integer(reply[0]);
      if (code === 2) return { fence: integer(reply[1]), previousOwner: String(reply[2]) };
      if (code === 3) return { changed: true, fence: integer(reply[1]), owner: String(reply[2]) };
      return code === 0 ? 'not_found' : 'not_in_progress';
    },
    async delete(storageKey, _owner, expected) {
      const key = redisKey(storageKey);
      const status = expected?.status === undefined ? '' : String(statusCode(expected.status));
      const reply = await call('delete', () =>
        commands.delete(key, fenceMemory, status, ...expecting(expected)),
      );
      const code = integer(reply[0]);
      if (code !== 3) return code === 1;
      const found = { status: statusOf(integer(reply[1])), fence: integer(reply[2]) };
      return { changed: true, ...found, owner: String(reply[3]) };
    },
  });
}

/** The expected owner and fence as script arguments, `''` for one not given (no owner token is empty). */
function expecting(expected: { owner?: string; fence?: number } | undefined): [string, string] {
  return [expected?.owner ?? '', expected?.fence === undefined ? '' : String(expected.fence)];
}
