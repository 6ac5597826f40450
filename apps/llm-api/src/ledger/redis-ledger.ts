import type { Redis } from 'ioredis';
import {
  type BillResult,
  type Ledger,
  type LedgerEntry,
  StaleFenceError,
  type StatName,
  zeroStats,
} from './ledger.js';
import { UsageAccumulator } from './usage-summary.js';

/** Bills one `HSCAN` step of {@link createRedisLedger}'s `usage` asks for. */
const SCAN_COUNT = 5_000;

// KEYS[1] ledger hash (message id -> entry JSON); ARGV: id, fence, entry JSON.
// Returns {code, current fence}: 1 billed, 2 replaced, 3 duplicate, 0 stale.
const BILL_LUA = `
local current = redis.call('HGET', KEYS[1], ARGV[1])
local fence = tonumber(ARGV[2])
if current then
  local stored = tonumber(cjson.decode(current).fence)
  if stored > fence then return {0, stored} end
  if stored == fence then return {3, stored} end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return {2, stored}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return {1, fence}
`;

const RESULTS: Record<number, BillResult> = { 1: 'billed', 2: 'replaced', 3: 'duplicate' };

/**
 * The ledger in Redis: one hash of entries (`<prefix>ledger`), billed by one Lua script so
 * that the fence check and the write are atomic, and one hash of counters (`<prefix>stats`).
 * Survives a restart of the server. The caller owns the client.
 */
export function createRedisLedger(client: Redis, prefix: string): Ledger {
  const ledgerKey = `${prefix}ledger`;
  const statsKey = `${prefix}stats`;
  return {
    async bill(entry: LedgerEntry) {
      const [code, current] = (await client.eval(
        BILL_LUA,
        1,
        ledgerKey,
        entry.messageId,
        String(entry.fence),
        JSON.stringify(entry),
      )) as [number, number];
      const result = RESULTS[code];
      if (!result) throw new StaleFenceError(entry.messageId, entry.fence, current);
      return result;
    },
    async entries() {
      const all = await client.hvals(ledgerKey);
      return all
        .map((json) => JSON.parse(json) as LedgerEntry)
        .sort((a, b) => a.billedAt - b.billedAt);
    },
    // HSCAN in steps, never HVALS: one HVALS of a ledger of 500,000 bills blocked Redis for
    // every client for 0.7 s and the event loop of this process for seconds (parsing, sorting
    // and serialising all of it). Each step is small, and the event loop is given back between
    // steps. HSCAN may return a bill twice (the hash grows during the scan): the ids seen are
    // kept for the call, so that no bill is counted twice.
    async usage(limit: number, signal?: AbortSignal) {
      const summary = new UsageAccumulator(limit);
      const seen = new Set<string>();
      let cursor = '0';
      do {
        // Abandoned (timed out): no more steps for nobody.
        signal?.throwIfAborted();
        const [next, flat] = await client.hscan(ledgerKey, cursor, 'COUNT', SCAN_COUNT);
        for (let i = 0; i + 1 < flat.length; i += 2) {
          const id = flat[i] as string;
          if (seen.has(id)) continue;
          seen.add(id);
          summary.add(JSON.parse(flat[i + 1] as string) as LedgerEntry);
        }
        cursor = next;
        if (cursor !== '0') await new Promise((resolve) => setImmediate(resolve));
      } while (cursor !== '0');
      return summary.result();
    },
    async count(name: StatName) {
      await client.hincrby(statsKey, name, 1);
    },
    async stats() {
      const raw = await client.hgetall(statsKey);
      const stats = zeroStats();
      for (const name of Object.keys(stats) as StatName[]) stats[name] = Number(raw[name] ?? 0);
      return stats;
    },
  };
}
