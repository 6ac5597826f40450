import {
  type ForceReleaseResult,
  forcedReleaseOwner,
  inspectionOf,
  type StoreAdmin,
} from '@idem/core';
import { integer, type Reply, toRecord } from './redis-reply.js';

/** The admin scripts as callable commands (see admin-scripts.ts). */
export interface AdminCommands {
  inspect(key: string): Promise<Reply[]>;
  forceRelease(
    key: string,
    fenceKey: string,
    owner: string,
    fenceMemoryMs: string,
  ): Promise<Reply[]>;
  delete(key: string): Promise<number>;
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
  return {
    async inspect(storageKey) {
      const key = redisKey(storageKey);
      const reply = await call('inspect', () => commands.inspect(key));
      if (reply.length < 2) return undefined;
      const { outcome, ...record } = toRecord(reply[1], false);
      return inspectionOf(record, integer(reply[0]), outcome?.length ?? 0);
    },
    async forceRelease(storageKey): Promise<ForceReleaseResult> {
      const key = redisKey(storageKey);
      const owner = forcedReleaseOwner();
      const reply = await call('forceRelease', () =>
        commands.forceRelease(key, `${key}:fence`, owner, fenceMemory),
      );
      const code = integer(reply[0]);
      if (code === 0) return { ok: false, reason: 'not_found' };
      if (code === 1) return { ok: false, reason: 'not_in_progress' };
      const previous = reply[2];
      return {
        ok: true,
        fence: integer(reply[1]),
        previousOwner: Buffer.isBuffer(previous) ? previous.toString('utf8') : String(previous),
      };
    },
    async delete(storageKey) {
      const key = redisKey(storageKey);
      const deleted = await call('delete', () => commands.delete(key));
      return { deleted: deleted === 1 };
    },
  };
}
