import type { Redis } from 'ioredis';

/**
 * What a ledger write did:
 * - `written`: the first write for this id;
 * - `replaced`: a newer execution (higher fence) replaced an older one's write, which lost
 *   its lease: the id still has one entry;
 * - `stale`: refused, a write with this fence or a higher one is already there.
 */
export type LedgerWrite = 'written' | 'replaced' | 'stale';

/** Counts of every write attempt, by result. */
export interface LedgerStats {
  written: number;
  replaced: number;
  stale: number;
}

/** One committed entry. */
export interface LedgerEntry {
  fence: number;
  value: string;
}

/** A fenced side-effect ledger in Redis: one entry per id, a write with a stale fence refused. */
export interface FencedLedger {
  write(id: string, fence: number, value: string): Promise<LedgerWrite>;
  entries(): Promise<Map<string, LedgerEntry>>;
  stats(): Promise<LedgerStats>;
  /** Deletes every key of this ledger. */
  drop(): Promise<void>;
}

// One atomic step: compare the fence, write or refuse, count. A write with the SAME fence is
// refused too: one execution writes once, so a second write with its fence is a duplicate.
const WRITE = `
local cur = redis.call('HGET', KEYS[1], 'fence')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then
  redis.call('HINCRBY', KEYS[2], 'stale', 1)
  return 'stale'
end
redis.call('HSET', KEYS[1], 'fence', ARGV[1], 'value', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
if cur then
  redis.call('HINCRBY', KEYS[2], 'replaced', 1)
  return 'replaced'
end
redis.call('HINCRBY', KEYS[2], 'written', 1)
return 'written'
`;

/** A ledger under `prefix` (unique per test run). */
export function createFencedLedger(redis: Redis, prefix: string): FencedLedger {
  const entryKey = (id: string) => `${prefix}entry:${id}`;
  const statsKey = `${prefix}stats`;
  const idsKey = `${prefix}ids`;
  return {
    async write(id, fence, value) {
      return (await redis.eval(
        WRITE,
        3,
        entryKey(id),
        statsKey,
        idsKey,
        String(fence),
        value,
        id,
      )) as LedgerWrite;
    },
    async entries() {
      const ids = await redis.smembers(idsKey);
      const map = new Map<string, LedgerEntry>();
      for (const id of ids) {
        const [fence, value] = await redis.hmget(entryKey(id), 'fence', 'value');
        map.set(id, { fence: Number(fence), value: value ?? '' });
      }
      return map;
    },
    async stats() {
      const raw = await redis.hgetall(statsKey);
      return {
        written: Number(raw.written ?? 0),
        replaced: Number(raw.replaced ?? 0),
        stale: Number(raw.stale ?? 0),
      };
    },
    async drop() {
      const ids = await redis.smembers(idsKey);
      const keys = [statsKey, idsKey, ...ids.map(entryKey)];
      for (let i = 0; i < keys.length; i += 500) await redis.del(...keys.slice(i, i + 500));
    },
  };
}

/** The Redis the tests use: REDIS_URL, else 127.0.0.1:6379. */
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** How to provide the Redis the tests need, for failure messages. */
export const REDIS_HELP = `These tests need Redis at ${REDIS_URL}: start one (redis-server --port 6379, or bash scripts/bootstrap.sh --services) or set REDIS_URL.`;

export type { PrivateRedis } from './private-redis.js';
export { startPrivateRedis } from './private-redis.js';
export type { StoreMethods } from './refusing-store.js';
export { refusingCompletes } from './refusing-store.js';
