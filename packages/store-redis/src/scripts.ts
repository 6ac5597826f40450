/**
 * The Lua scripts behind each store operation. Every script touches the keys of one storage
 * key only: its record and its fence memory, which share a hash tag (`{storageKey}`) and so
 * one Cluster slot; the scripts run unchanged on a Redis Cluster. Each reads the clock with
 * `TIME` inside the script, so Redis alone decides whether a lease or a retention passed.
 *
 * Record layout: one string per storage key, at `<prefix>{<storageKey>}`: a 42-byte header,
 * then the owner, the fingerprint, in format 2 the origin section, and, once completed, the
 * outcome bytes.
 *
 * | offset | type   | field                                                         |
 * |--------|--------|---------------------------------------------------------------|
 * | 0      | u8     | format: 1 (the origin is the owner), 2 (an origin section)    |
 * | 1      | u8     | status: 1 in progress, 2 completed, 3 released                |
 * | 2      | f64 BE | fence of the latest acquisition                               |
 * | 10     | f64 BE | lease deadline, epoch ms by Redis's clock                     |
 * | 18     | f64 BE | retention deadline, epoch ms (the key's PEXPIREAT is ex - 1)  |
 * | 26     | f64 BE | until when the fence memory key is kept (0: not written)      |
 * | 34     | u32 BE | owner length in bytes (`ol`)                                  |
 * | 38     | u32 BE | fingerprint length in bytes (`fl`)                            |
 * | 42     | bytes  | owner, then fingerprint                                       |
 * | 42+ol+fl | u32 BE | format 2 only: origin length in bytes, then the origin      |
 * | ...    | bytes  | outcome (completed only, to the end)                          |
 *
 * The origin (store contract, `acquire`, "Origin") is the owner token of the acquisition that
 * began the record's logical request. A record whose origin is its own owner (a free key's
 * acquisition, the common case) is format 1, byte for byte the record a build from before
 * origins wrote, and such a record, read by this build, counts its owner as its origin: on
 * format-1 records the builds before and after share a Redis during a rolling deploy.
 * A record that carries another acquisition's origin (a takeover of a passed lease, an
 * acquisition of a released tombstone, an operator's forced release) is format 2: the origin
 * follows the fingerprint, before the outcome. Both formats share the header, so every
 * offset a script reads from it, and the owner's place, are the same in both; only finding
 * the outcome (a completion's redelivery check, a read) skips the origin section. A
 * renewal, a completion or a release keeps the format and the origin section as they are.
 * An earlier version refuses a format-2 record ("unknown record format", a
 * `StoreUnavailableError`): it fails closed, it never takes it for a free key.
 *
 * Deadlines and fences are integers below 2^53, exact in a double: `struct.pack` writes
 * them without any number formatting, and the client reads them with `readDoubleBE`. A step
 * reads the record with one `GET` and `struct.unpack`; a renewal or a release rewrites the
 * header in place (`SETRANGE`); a completion writes the value once more with the outcome
 * after it (one `SET` of its exact size: `APPEND` would leave Redis's growth room, which
 * made a completed record with a 1 KiB outcome 40 % larger).
 *
 * Fence memory: a small string at `<prefix>{<storageKey>}:fence` holding the key's last
 * fence (decimal), kept `fenceMemoryMs` past the record's retention deadline (absent when
 * that is 0). An acquisition continues from it, so fences keep growing after Redis dropped
 * an expired record, while the record itself (outcome bytes included) is freed on time. It
 * is written when its fence changes (an acquisition) and when the record's retention
 * deadline moves past what it covers (header offset 26): a completion inside the first
 * lease, the common case, leaves it alone. An acquisition of a key without a record takes
 * its fence with `INCR` (the memory + 1, or 1 without one) and then sets the memory's
 * expiry with `PEXPIREAT`, about 8 % fewer instructions than `GET`, `tonumber` and `SET`;
 * every writer of the memory writes an integer (`%d` here, `%.0f` in 0.1).
 *
 * Records of the earlier layout (a hash: `s`, `fp`, `o`, `f`, `lu`, `ex`, `out`, package
 * 0.1) may still be in Redis after an upgrade. `acquire` reads one (`GET` answers
 * `WRONGTYPE`, caught with `pcall`) and judges it like its own: a live outcome is replayed,
 * a live lease is respected, and an acquisition replaces it by a record of this layout,
 * continuing its fence. `complete`, `release` and `extend` answer "not the owner" for one,
 * since no owner of this version holds a hash. The fence memory key is the same in both.
 *
 * A record is expired once `now >= ex`; Redis drops a key once `now > PEXPIREAT`, so the
 * key carries `PEXPIREAT ex - 1` and disappears in the very millisecond the record expires.
 *
 * Writes to an existing record (a renewal, a completion, a release) start with `PEXPIREAT`.
 * Under `maxmemory` with `noeviction`, Redis refuses a script only at its first write, and
 * only when that write needs memory (`PEXPIREAT` does not; `SET` and `SETRANGE` do):
 * so a full Redis refuses new records (`OOM`, `StoreFullError`) yet still records the
 * heartbeats, completions and releases of executions already running, whose retries would
 * otherwise run them again once room appears. Memory can then exceed `maxmemory` by the
 * outcomes of the executions in flight.
 *
 * Every deadline is capped at 2^53 - 1, so that a retention as long as core accepts (up to
 * `Number.MAX_SAFE_INTEGER` ms) still reads back as a safe integer; key expiries are
 * written with `%d`, never in exponent notation. Scripts are replicated by their effects
 * (the default since Redis 5, the only mode since Redis 7), so reading `TIME` before a write
 * is allowed and replicas receive the writes with the deadlines the primary computed.
 */

/** Length of the record header. */
export const HEADER_BYTES = 42;
/** Header byte 0 of a record whose origin is its owner (no origin section). */
export const RECORD_FORMAT = 1;
/** Header byte 0 of a record with an origin section (its origin is another owner's token). */
export const ORIGIN_FORMAT = 2;

// `now` by Redis's clock, epoch ms. Lua 5.1 coerces TIME's strings in arithmetic.
export const NOW = `
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
`;

/**
 * Writes `value` to KEYS[1] with its key expiry at `at` (`ex - 1`, as text): one
 * `SET ... PXAT` where Redis has it (6.2; `redis.REDIS_VERSION_NUM` is set from 7.0), else
 * `SET` then `PEXPIREAT` (a `SET` drops the key's expiry). Inside a script each
 * `redis.call` has a fixed cost on top of its command's, so one call fewer shows.
 */
export const setRecord = (value: string, at: string): string => `if redis.REDIS_VERSION_NUM then
  redis.call('SET', KEYS[1], ${value}, 'PXAT', ${at})
else
  redis.call('SET', KEYS[1], ${value})
  redis.call('PEXPIREAT', KEYS[1], ${at})
end`;

// The header without the two lengths (rewritten in place with SETRANGE), and the whole one.
const HEAD = `'>BBdddd'`;
export const HEADER = `'>BBddddI4I4'`;

/**
 * Returns an error unless the string `v` is a record of format 1 or 2. A format-1 record
 * compares once, as before format 2 existed (a replay is decided right after this).
 */
const FORMATS = `if string.byte(v, 1) ~= ${RECORD_FORMAT} and string.byte(v, 1) ~= ${ORIGIN_FORMAT} then
    return redis.error_reply('idem: unknown record format')
  end`;

/**
 * Reads KEYS[1] as `v` (a string of this layout, or false) and unpacks its header into
 * `fmt, st, f, lu, ex, fm, ol, fl`. A hash of the earlier layout leaves `v` a table (`legacy`).
 */
export const READ = `
local v = redis.pcall('GET', KEYS[1])
local fmt, st, f, lu, ex, fm, ol, fl
if type(v) == 'string' then
  ${FORMATS}
  fmt, st, f, lu, ex, fm, ol, fl = struct.unpack(${HEADER}, v)
end
`;

/**
 * Lua, inside a block run for a format-2 record `v` only: sets `origin` (declared by the
 * caller) to the token of its origin section, which follows the fingerprint. An origin
 * section that is empty or runs past the value's end (no store writes either: by hand, or
 * corrupted) returns an error before the caller writes anything: taken as found, a cut or
 * empty origin was carried into a well-formed record.
 */
export const CARRIED_ORIGIN = `local at = ${HEADER_BYTES + 1} + ol + fl
    local n = #v >= at + 3 and struct.unpack('>I4', v, at) or 0
    if n == 0 or at + 3 + n > #v then
      return redis.error_reply('idem: malformed record (origin section): left as it is')
    end
    origin = string.sub(v, at + 4, at + 3 + n)`;

/**
 * The value of a format-2 record: header, owner, fingerprint and the origin section (the
 * Lua expressions of each field).
 */
export const withOrigin = (
  status: number,
  numbers: string,
  owner: string,
  fingerprint: string,
  origin: string,
): string =>
  `struct.pack(${HEADER}, ${ORIGIN_FORMAT}, ${status}, ${numbers}, #${owner}, #${fingerprint}) ..
    ${owner} .. ${fingerprint} .. struct.pack('>I4', #${origin}) .. ${origin}`;

/**
 * Writes the fence memory (KEYS[2]) when `memory` > 0 and the record's new retention
 * deadline `expiresAt` outlives what it covers (`fm`); leaves `fm` as what it covers now.
 */
export const REMEMBER = `
if memory > 0 and expiresAt + memory > fm then
  fm = math.min(expiresAt + memory, 9007199254740991)
  if redis.REDIS_VERSION_NUM then
    redis.call('SET', KEYS[2], string.format('%d', f), 'PXAT', string.format('%d', fm))
  else
    redis.call('SET', KEYS[2], string.format('%d', f))
    redis.call('PEXPIREAT', KEYS[2], string.format('%d', fm))
  end
end
`;

/**
 * Refuses, before the record is written, a fence past 2^53 - 1 (not exact in a double: the
 * next one could repeat it). Only a fence memory set by hand gets there.
 */
const FENCE_LEFT = `if f > 9007199254740991 then return redis.error_reply('idem: no fence left below 2^53 for this key') end`;

/**
 * Lua condition, after the write's `PEXPIREAT KEYS[1] expiresAt - 1`: the key is gone, because
 * that expiry was already due (a release with a retention of 0 or 1 ms, an extend or a
 * redelivered acquire with a lease and a retention of 0): Redis deletes a key whose
 * `PEXPIREAT` is in the past at once. The header must then not be rewritten: `SETRANGE` on
 * the missing key created a new value of the header alone, without an expiry, that every
 * later call failed to read (the rev20 review: the key answered `STORE_UNAVAILABLE` for
 * ever). The record expired as it was written; the fence memory (written just before) keeps
 * its fence. Asked only when the deadline is that close (no extra call otherwise).
 */
const EXPIRED_AT_ONCE = `(expiresAt - 1 <= now + 1000 and redis.call('EXISTS', KEYS[1]) == 0)`;

/**
 * Owner check of complete, release and extend: returns 0 unless the record is of this
 * layout, unexpired, and held by ARGV[1]. Each script then checks the status it accepts.
 */
const MINE = `${READ}
if not st or string.sub(v, ${HEADER_BYTES + 1}, ${HEADER_BYTES} + ol) ~= ARGV[1] then return 0 end
${NOW}
if not (now < ex) then return 0 end
`;

/**
 * When `v` is a table (KEYS[1] holds a hash of the earlier layout), sets `v` to that record
 * converted to this layout in memory (nothing is written; format 1: its origin is its owner),
 * or to false when it has no status, and unpacks its header. Inline, not a function: a
 * closure would be created on every call of the script.
 */
export const LEGACY = `
if type(v) == 'table' then
  local h = redis.call('HMGET', KEYS[1], 's', 'fp', 'o', 'f', 'lu', 'ex', 'out')
  local code = ({in_progress = 1, completed = 2, released = 3})[h[1]]
  v = false
  if code then
    local o, fp = h[3] or '', h[2] or ''
    v = struct.pack(${HEADER}, ${RECORD_FORMAT}, code, tonumber(h[4]) or 0, tonumber(h[5]) or 0,
      tonumber(h[6]) or 0, 0, #o, #fp) .. o .. fp .. (code == 2 and h[7] or '')
    fmt, st, f, lu, ex, fm, ol, fl = struct.unpack(${HEADER}, v)
  end
end
`;

/**
 * The acquire script's durations (leaseMs, retentionMs, fenceMemoryMs; integers below 2^53)
 * as its one argument ARGV[3]: eight base-128 digits each, most significant first. Against
 * one decimal argument each, two arguments fewer for Redis to move into Lua on every call
 * (a replay included); decoding them costs about what `tonumber` did, and only the paths
 * that write decode them. Every char is below 0x80, so ioredis sends the string as it is
 * (UTF-8) and the command stays a string command: a `Buffer` argument (raw doubles) would
 * switch ioredis to assembling a buffer, which cost the client about 1.5 µs more per
 * acquisition than it saved Redis.
 */
export function packDurations(...durations: number[]): string {
  let text = '';
  for (const duration of durations) {
    let rest = duration;
    let digits = '';
    for (let i = 0; i < 8; i++) {
      digits = String.fromCharCode(rest % 128) + digits;
      rest = Math.floor(rest / 128);
    }
    text += digits;
  }
  return text;
}

/**
 * The complete script's durations (retentionMs, fenceMemoryMs) as its one argument ARGV[2]:
 * big-endian doubles (exact below 2^53), read with one `struct.unpack`. A completion is a
 * buffer command for ioredis anyway (the outcome bytes), so raw bytes cost the client
 * nothing more here, and they decode cheaper than digits.
 */
export function packDoubles(...durations: number[]): Buffer {
  const packed = Buffer.allocUnsafe(8 * durations.length);
  for (let i = 0; i < durations.length; i++) packed.writeDoubleBE(durations[i]!, 8 * i);
  return packed;
}

/**
 * Lua: declares `names` as the durations packed in ARGV[`arg`] ({@link packDurations}).
 * Exact: each partial value is below the duration, itself below 2^53.
 */
export const unpackDurations = (arg: number, ...names: string[]): string =>
  names
    .map(
      (
        name,
        i,
      ) => `${i === 0 ? 'local ' : ''}n1, n2, n3, n4, n5, n6, n7, n8 = string.byte(ARGV[${arg}], ${8 * i + 1}, ${8 * i + 8})
local ${name} = ((((((n1 * 128 + n2) * 128 + n3) * 128 + n4) * 128 + n5) * 128 + n6) * 128 + n7) * 128 + n8`,
    )
    .join('\n');

/** The durations of an acquisition, unpacked only on the paths that write (not a replay or a conflict). */
const ACQUIRE_DURATIONS = `${unpackDurations(3, 'leaseMs', 'retentionMs', 'memory')}
local leaseUntil = math.min(now + leaseMs, 9007199254740991)
local expiresAt = math.min(leaseUntil + retentionMs, 9007199254740991)`;

/**
 * KEYS: record, fence memory. ARGV: fingerprint, owner, durations
 * ({@link packDurations}: leaseMs, retentionMs, fenceMemoryMs).
 * Returns `{1, fence, leaseUntil, takeover}` when acquired with ARGV[2] as the origin, `{1,
 * fence, leaseUntil, takeover, origin}` when acquired with another origin, or `{0, now,
 * record}` with the live record that prevented it (raw bytes of this layout).
 *
 * Origin: a free key (no record, or an expired one) begins a logical request, whose origin
 * is ARGV[2] (a format-1 record, as before origins were kept: the reply is unchanged too).
 * A takeover of a passed lease and an acquisition of a released tombstone, the record
 * unexpired, carry the record's origin over (format 1: its owner; format 2: its origin
 * section) into a format-2 record. A redelivery keeps the record as it is and answers its
 * origin (format 2 only: a format-1 record's is the caller's own token).
 *
 * A replay (a completed record of this layout, unexpired) is decided first, from the status
 * byte and the retention deadline alone: nothing else of the header is unpacked and no
 * argument is converted. A conflict converts no argument either.
 *
 * An unexpired in-progress record held by ARGV[2] is the caller's own acquisition delivered
 * again (ioredis resends a script whose answer a dropped connection lost): its lease is
 * renewed from now and the same fence is answered, whether the lease is still live or has
 * passed without anybody taking it over.
 */
export const ACQUIRE_LUA = `
local v = redis.pcall('GET', KEYS[1])
local fmt, st, f, lu, ex, fm, ol, fl
if type(v) == 'string' then
  ${FORMATS}
  st = string.byte(v, 2)
end
${NOW}
if st == 2 then
  ex = struct.unpack('>d', v, 19)
  if now < ex then return {0, now, v} end
end
if st then fmt, st, f, lu, ex, fm, ol, fl = struct.unpack(${HEADER}, v) end
local old = type(v) == 'table'
${LEGACY}local takeover, origin = 0
if st then
  if now < ex then
    if st == 1 then
      if string.sub(v, ${HEADER_BYTES + 1}, ${HEADER_BYTES} + ol) == ARGV[2] then
        -- The origin first: a malformed one is refused before anything is written.
        if fmt == ${ORIGIN_FORMAT} then
          ${CARRIED_ORIGIN}
        end
        ${ACQUIRE_DURATIONS}
        redis.call('PEXPIREAT', KEYS[1], string.format('%d', expiresAt - 1))
        ${REMEMBER}
        if ${EXPIRED_AT_ONCE} then return {1, f, leaseUntil, 0, origin} end
        local head = struct.pack(${HEAD}, fmt, 1, f, leaseUntil, expiresAt, fm)
        if old then
          -- Rewritten in this layout (SET drops the expiry: set again).
          redis.call('SET', KEYS[1], head .. string.sub(v, 35))
          redis.call('PEXPIREAT', KEYS[1], string.format('%d', expiresAt - 1))
        else
          redis.call('SETRANGE', KEYS[1], 0, head)
        end
        return {1, f, leaseUntil, 0, origin}
      end
      if now < lu then return {0, now, v} end
      takeover = 1
    elseif st == 2 then
      return {0, now, v}
    end
    -- A passed lease or a released tombstone: the same logical request goes on.
    if fmt == ${ORIGIN_FORMAT} then
      ${CARRIED_ORIGIN}
    else
      origin = string.sub(v, ${HEADER_BYTES + 1}, ${HEADER_BYTES} + ol)
    end
    if origin == ARGV[2] then origin = nil end
  end
else
  f = 0
end
${ACQUIRE_DURATIONS}
if memory > 0 and not st then
  -- No record: the fence continues from the fence memory alone (kept + 1, or 1 without one),
  -- read and written by one INCR; then kept until the new record's deadline + memory.
  f = redis.call('INCR', KEYS[2])
  ${FENCE_LEFT}
  fm = math.min(expiresAt + memory, 9007199254740991)
  redis.call('PEXPIREAT', KEYS[2], string.format('%d', fm))
else
  if memory > 0 then
    local kept = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
    if kept > f then f = kept end
  end
  f = f + 1
  ${FENCE_LEFT}
  fm = 0
  ${REMEMBER}
end
if origin then
  ${setRecord(
    withOrigin(1, 'f, leaseUntil, expiresAt, fm', 'ARGV[2]', 'ARGV[1]', 'origin'),
    `string.format('%d', expiresAt - 1)`,
  )}
  return {1, f, leaseUntil, takeover, origin}
end
-- A free key (or a record whose origin is this owner): format 1, as before origins were kept.
${setRecord(
  `struct.pack(${HEADER}, ${RECORD_FORMAT}, 1, f, leaseUntil, expiresAt, fm, #ARGV[2], #ARGV[1]) ..
    ARGV[2] .. ARGV[1]`,
  `string.format('%d', expiresAt - 1)`,
)}
return {1, f, leaseUntil, takeover}
`;

/**
 * KEYS: record, fence memory. ARGV: owner, durations ({@link packDoubles}: retentionMs,
 * fenceMemoryMs), outcome bytes, touch.
 * Returns 1 when completed, 2 when the record is already completed by this owner with these
 * very bytes (a redelivery: nothing changes), 0 otherwise (not the owner).
 *
 * `touch` = '1' (set by the replica-wait mode) makes the redelivery path set the key's expiry
 * to the value it has: the record stays the same, but the write moves this connection's
 * replication offset past it, so the WAIT that follows covers the completion even when the
 * first delivery's WAIT did not.
 */
export const COMPLETE_LUA = `${MINE}
if st == 2 then
  -- The outcome follows the fingerprint, and in format 2 the origin section.
  local body = ${HEADER_BYTES + 1} + ol + fl
  if fmt == ${ORIGIN_FORMAT} then body = body + 4 + struct.unpack('>I4', v, body) end
  if string.sub(v, body) ~= ARGV[3] then return 0 end
  if ARGV[4] == '1' and ex - 1 > now then
    redis.call('PEXPIREAT', KEYS[1], string.format('%d', ex - 1))
  end
  return 2
end
if st ~= 1 then return 0 end
local retentionMs, memory = struct.unpack('>dd', ARGV[2])
local expiresAt = math.min(now + retentionMs, 9007199254740991)
local at = string.format('%d', expiresAt - 1)
redis.call('PEXPIREAT', KEYS[1], at)
${REMEMBER}
-- One value of its exact size: APPEND would leave Redis's growth room (about as much again).
-- The format, the owner, the fingerprint and the origin section stay as they are.
${setRecord(`struct.pack(${HEAD}, fmt, 2, f, lu, expiresAt, fm) .. string.sub(v, 35) .. ARGV[3]`, 'at')}
return 1
`;

/**
 * KEYS: record, fence memory. ARGV: owner, retentionMs, fenceMemoryMs.
 * Returns 1 when released (the tombstone keeps the fence), 2 when it already is this
 * owner's tombstone (a redelivery: nothing changes), 0 when not the owner.
 */
export const RELEASE_LUA = `${MINE}
if st == 3 then return 2 end
if st ~= 1 then return 0 end
local memory = tonumber(ARGV[3])
local expiresAt = math.min(now + tonumber(ARGV[2]), 9007199254740991)
redis.call('PEXPIREAT', KEYS[1], string.format('%d', expiresAt - 1))
${REMEMBER}
if ${EXPIRED_AT_ONCE} then return 1 end
redis.call('SETRANGE', KEYS[1], 0, struct.pack(${HEAD}, fmt, 3, f, now, expiresAt, fm))
return 1
`;

/**
 * KEYS: record, fence memory. ARGV: owner, leaseMs, retentionMs, fenceMemoryMs.
 * Returns the new lease deadline, or 0 when not the owner.
 */
export const EXTEND_LUA = `${MINE}
if st ~= 1 then return 0 end
local memory = tonumber(ARGV[4])
local leaseUntil = math.min(now + tonumber(ARGV[2]), 9007199254740991)
local expiresAt = math.min(leaseUntil + tonumber(ARGV[3]), 9007199254740991)
redis.call('PEXPIREAT', KEYS[1], string.format('%d', expiresAt - 1))
${REMEMBER}
if ${EXPIRED_AT_ONCE} then return leaseUntil end
redis.call('SETRANGE', KEYS[1], 0, struct.pack(${HEAD}, fmt, 1, f, leaseUntil, expiresAt, fm))
return leaseUntil
`;

/**
 * KEYS: record. Returns the record's bytes (this layout; one of the earlier layout is
 * converted), or nil when there is none or it has expired.
 */
export const GET_LUA = `${READ}${NOW}${LEGACY}if not st or not (now < ex) then return false end
return v
`;
