/**
 * The Lua scripts behind each store operation. Every script touches the keys of one storage
 * key only: its record and its fence memory, which share a hash tag (`{storageKey}`) and so
 * one Cluster slot; the scripts run unchanged on a Redis Cluster. Each reads the clock with
 * `TIME` inside the script, so Redis alone decides whether a lease or a retention passed.
 *
 * Record layout: one hash per storage key, at `<prefix>{<storageKey>}`.
 *
 * | field | meaning                                                    |
 * |-------|------------------------------------------------------------|
 * | `s`   | status: `in_progress`, `completed` or `released`           |
 * | `fp`  | fingerprint of the request that acquired the record        |
 * | `o`   | owner token of the latest acquisition                      |
 * | `f`   | fence of the latest acquisition (decimal)                  |
 * | `lu`  | lease deadline, epoch ms by Redis's clock                  |
 * | `ex`  | retention deadline, epoch ms (the key's PEXPIREAT is ex - 1)|
 * | `out` | encoded outcome bytes, raw (only when `s` is `completed`)  |
 *
 * Fence memory: a small string at `<prefix>{<storageKey>}:fence` holding the key's last
 * fence, kept `fenceMemoryMs` past the record's retention deadline (absent when that is 0).
 * An acquisition continues from it, so fences keep growing after Redis dropped an expired
 * record, while the record itself (outcome bytes included) is freed on time.
 *
 * A record is expired once `now >= ex`; Redis drops a key once `now > PEXPIREAT`, so the
 * key carries `PEXPIREAT ex - 1` and disappears in the very millisecond the record expires.
 *
 * Writes to an existing record (a renewal, a completion, a release) start with `PEXPIREAT`.
 * Under `maxmemory` with `noeviction`, Redis refuses a script only at its first write, and
 * only when that write needs memory (`PEXPIREAT` does not; `HSET` and `SET` do): so a full
 * Redis refuses new records (`OOM`, `StoreFullError`) yet still records the heartbeats,
 * completions and releases of executions already running, whose retries would otherwise
 * run them again once room appears. Memory can then exceed `maxmemory` by the outcomes of
 * the executions in flight.
 *
 * Numbers are written with `%.0f` so that large values never turn into exponent notation.
 * Every deadline is capped at 2^53 - 1 (`deadline`), so that a retention as long as core
 * accepts (up to `Number.MAX_SAFE_INTEGER` ms) still reads back as a safe integer.
 * Scripts are replicated by their effects (the default since Redis 5, the only mode since
 * Redis 7), so reading `TIME` before a write is allowed and replicas receive the writes with
 * the deadlines the primary computed, never a re-run of the script under another clock.
 */

const PRELUDE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function fmt(n) return string.format('%.0f', n) end
local function deadline(n) return math.min(n, 9007199254740991) end
`;

/** Remembers `fence` in KEYS[2] until `memory` ms after the record's retention deadline. */
const REMEMBER_FENCE = `
local function remember(fence, expiresAt, memory)
  if memory > 0 then
    redis.call('SET', KEYS[2], fence, 'PX', fmt(expiresAt + memory - now))
  end
end
`;

/**
 * KEYS: record, fence memory. ARGV: fingerprint, owner, leaseMs, retentionMs, fenceMemoryMs.
 * Returns `{1, fence, leaseUntil, takeover}` when acquired, or
 * `{0, now, s, fp, o, f, lu, ex[, out]}` with the live record that prevented it.
 *
 * An unexpired in-progress record held by ARGV[2] is the caller's own acquisition delivered
 * again (ioredis resends a script whose answer a dropped connection lost): its lease is
 * renewed from now and the same fence is answered, whether the lease is still live or has
 * passed without anybody taking it over.
 */
export const ACQUIRE_LUA = `${PRELUDE}${REMEMBER_FENCE}
local r = redis.call('HMGET', KEYS[1], 's', 'fp', 'o', 'f', 'lu', 'ex', 'out')
local status = r[1]
local fence = 0
local takeover = 0
local memory = tonumber(ARGV[5])
if status then
  local ex = tonumber(r[6])
  if ex and now < ex then
    if status == 'in_progress' then
      if r[3] == ARGV[2] then
        local leaseUntil = deadline(now + tonumber(ARGV[3]))
        local expiresAt = deadline(leaseUntil + tonumber(ARGV[4]))
        redis.call('PEXPIREAT', KEYS[1], fmt(expiresAt - 1))
        redis.call('HSET', KEYS[1], 'lu', fmt(leaseUntil), 'ex', fmt(expiresAt))
        remember(r[4], expiresAt, memory)
        return {1, tonumber(r[4]), leaseUntil, 0}
      end
      if now < tonumber(r[5]) then
        return {0, now, r[1], r[2], r[3], r[4], r[5], r[6]}
      end
      takeover = 1
    elseif status == 'completed' then
      return {0, now, r[1], r[2], r[3], r[4], r[5], r[6], r[7]}
    end
  end
  fence = tonumber(r[4]) or 0
  if r[7] then redis.call('HDEL', KEYS[1], 'out') end
end
if memory > 0 then
  local kept = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  if kept > fence then fence = kept end
end
fence = fence + 1
local leaseUntil = deadline(now + tonumber(ARGV[3]))
local expiresAt = deadline(leaseUntil + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 's', 'in_progress', 'fp', ARGV[1], 'o', ARGV[2], 'f', fmt(fence),
  'lu', fmt(leaseUntil), 'ex', fmt(expiresAt))
redis.call('PEXPIREAT', KEYS[1], fmt(expiresAt - 1))
remember(fmt(fence), expiresAt, memory)
return {1, fence, leaseUntil, takeover}
`;

/**
 * Shared owner check: loads `s`, `o`, `ex`, `f` into `r` and returns 0 unless the record is
 * unexpired and held by ARGV[1]. Each script then checks the status it accepts.
 */
const MINE = `
local r = redis.call('HMGET', KEYS[1], 's', 'o', 'ex', 'f')
if r[2] ~= ARGV[1] or not (now < (tonumber(r[3]) or 0)) then
  return 0
end
`;

/**
 * KEYS: record, fence memory. ARGV: owner, retentionMs, fenceMemoryMs, outcome bytes, touch.
 * Returns 1 when completed, 2 when the record is already completed by this owner with these
 * very bytes (a redelivery: nothing changes), 0 otherwise (not the owner).
 *
 * `touch` = '1' (set by the replica-wait mode) makes the redelivery path set the key's expiry
 * to the value it has: the record stays the same, but the write moves this connection's
 * replication offset past it, so the WAIT that follows covers the completion even when the
 * first delivery's WAIT did not.
 */
export const COMPLETE_LUA = `${PRELUDE}${REMEMBER_FENCE}${MINE}
if r[1] == 'completed' then
  if redis.call('HGET', KEYS[1], 'out') ~= ARGV[4] then return 0 end
  local ex = tonumber(r[3])
  if ARGV[5] == '1' and ex - 1 > now then redis.call('PEXPIREAT', KEYS[1], fmt(ex - 1)) end
  return 2
end
if r[1] ~= 'in_progress' then return 0 end
local expiresAt = deadline(now + tonumber(ARGV[2]))
redis.call('PEXPIREAT', KEYS[1], fmt(expiresAt - 1))
redis.call('HSET', KEYS[1], 's', 'completed', 'ex', fmt(expiresAt), 'out', ARGV[4])
remember(r[4], expiresAt, tonumber(ARGV[3]))
return 1
`;

/**
 * KEYS: record, fence memory. ARGV: owner, retentionMs, fenceMemoryMs.
 * Returns 1 when released (the tombstone keeps the fence), 2 when it already is this
 * owner's tombstone (a redelivery: nothing changes), 0 when not the owner.
 */
export const RELEASE_LUA = `${PRELUDE}${REMEMBER_FENCE}${MINE}
if r[1] == 'released' then return 2 end
if r[1] ~= 'in_progress' then return 0 end
local expiresAt = deadline(now + tonumber(ARGV[2]))
redis.call('PEXPIREAT', KEYS[1], fmt(expiresAt - 1))
redis.call('HSET', KEYS[1], 's', 'released', 'lu', fmt(now), 'ex', fmt(expiresAt))
remember(r[4], expiresAt, tonumber(ARGV[3]))
return 1
`;

/**
 * KEYS: record, fence memory. ARGV: owner, leaseMs, retentionMs, fenceMemoryMs.
 * Returns the new lease deadline, or 0 when not the owner.
 */
export const EXTEND_LUA = `${PRELUDE}${REMEMBER_FENCE}${MINE}
if r[1] ~= 'in_progress' then return 0 end
local leaseUntil = deadline(now + tonumber(ARGV[2]))
local expiresAt = deadline(leaseUntil + tonumber(ARGV[3]))
redis.call('PEXPIREAT', KEYS[1], fmt(expiresAt - 1))
redis.call('HSET', KEYS[1], 'lu', fmt(leaseUntil), 'ex', fmt(expiresAt))
remember(r[4], expiresAt, tonumber(ARGV[4]))
return leaseUntil
`;

/** KEYS: record. Returns `{s, fp, o, f, lu, ex[, out]}`, or nil when there is none or it has expired. */
export const GET_LUA = `${PRELUDE}
local r = redis.call('HMGET', KEYS[1], 's', 'fp', 'o', 'f', 'lu', 'ex', 'out')
if not r[1] or not (now < (tonumber(r[6]) or 0)) then return false end
return {r[1], r[2], r[3], r[4], r[5], r[6], r[7]}
`;
