/**
 * The Lua scripts behind each store operation. Every script touches exactly one key
 * (`KEYS[1]`), so it runs unchanged on a Redis Cluster, and reads the clock with `TIME`
 * inside the script, so Redis alone decides whether a lease or a retention has passed.
 *
 * Record layout: one hash per storage key.
 *
 * | field | meaning                                                    |
 * |-------|------------------------------------------------------------|
 * | `s`   | status: `in_progress`, `completed` or `released`           |
 * | `fp`  | fingerprint of the request that acquired the record        |
 * | `o`   | owner token of the latest acquisition                      |
 * | `f`   | fence of the latest acquisition (decimal)                  |
 * | `lu`  | lease deadline, epoch ms by Redis's clock                  |
 * | `ex`  | retention deadline, epoch ms; the key's PEXPIREAT as well  |
 * | `out` | encoded outcome bytes, raw (only when `s` is `completed`)  |
 *
 * Numbers are written with `%.0f` so that large values never turn into exponent notation.
 * On Redis 7 scripts are replicated by their effects, so reading `TIME` before a write is
 * allowed; `redis.replicate_commands()` asks the same of Redis 3.2 to 6.
 */

const PRELUDE = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function fmt(n) return string.format('%.0f', n) end
`;

/**
 * ARGV: fingerprint, owner, leaseMs, retentionMs.
 * Returns `{1, fence, leaseUntil, takeover}` when acquired, or
 * `{0, now, s, fp, o, f, lu, ex[, out]}` with the live record that prevented it.
 */
export const ACQUIRE_LUA = `${PRELUDE}
local r = redis.call('HMGET', KEYS[1], 's', 'fp', 'o', 'f', 'lu', 'ex', 'out')
local status = r[1]
local fence = 0
local takeover = 0
if status then
  local ex = tonumber(r[6])
  if ex and now < ex then
    if status == 'in_progress' then
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
fence = fence + 1
local leaseUntil = now + tonumber(ARGV[3])
local expiresAt = leaseUntil + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 's', 'in_progress', 'fp', ARGV[1], 'o', ARGV[2], 'f', fmt(fence),
  'lu', fmt(leaseUntil), 'ex', fmt(expiresAt))
redis.call('PEXPIREAT', KEYS[1], fmt(expiresAt))
return {1, fence, leaseUntil, takeover}
`;

/** Shared owner check: a live (unexpired) in-progress record held by ARGV[1]. */
const OWNED = `
local r = redis.call('HMGET', KEYS[1], 's', 'o', 'ex')
if r[1] ~= 'in_progress' or r[2] ~= ARGV[1] or not (now < (tonumber(r[3]) or 0)) then
  return 0
end
`;

/** ARGV: owner, retentionMs, outcome bytes. Returns 1 when completed, 0 when not the owner. */
export const COMPLETE_LUA = `${PRELUDE}${OWNED}
local expiresAt = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 's', 'completed', 'ex', fmt(expiresAt), 'out', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], fmt(expiresAt))
return 1
`;

/** ARGV: owner, retentionMs. Returns 1 when released (tombstone keeps the fence), 0 when not the owner. */
export const RELEASE_LUA = `${PRELUDE}${OWNED}
local expiresAt = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 's', 'released', 'lu', fmt(now), 'ex', fmt(expiresAt))
redis.call('PEXPIREAT', KEYS[1], fmt(expiresAt))
return 1
`;

/** ARGV: owner, leaseMs, retentionMs. Returns the new lease deadline, or 0 when not the owner. */
export const EXTEND_LUA = `${PRELUDE}${OWNED}
local leaseUntil = now + tonumber(ARGV[2])
local expiresAt = leaseUntil + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'lu', fmt(leaseUntil), 'ex', fmt(expiresAt))
redis.call('PEXPIREAT', KEYS[1], fmt(expiresAt))
return leaseUntil
`;

/** Returns `{s, fp, o, f, lu, ex[, out]}`, or nil when there is no record or it has expired. */
export const GET_LUA = `${PRELUDE}
local r = redis.call('HMGET', KEYS[1], 's', 'fp', 'o', 'f', 'lu', 'ex', 'out')
if not r[1] or not (now < (tonumber(r[6]) or 0)) then return false end
return {r[1], r[2], r[3], r[4], r[5], r[6], r[7]}
`;
