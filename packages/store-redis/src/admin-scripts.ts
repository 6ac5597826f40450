import {
  CARRIED_ORIGIN,
  HEADER,
  HEADER_BYTES,
  LEGACY,
  NOW,
  ORIGIN_FORMAT,
  READ,
  RECORD_FORMAT,
  REMEMBER,
  setRecord,
  withOrigin,
} from './scripts.js';

// The operator's scripts (see scripts.ts for the record layout and the pieces they share). Each is
// one round trip and atomic, decided by Redis's `TIME`, like the state machine's scripts.

const READ_NOW = `${READ}${NOW}`;

/**
 * Refuses, before anything is written, a record whose header an operator's write would carry
 * on: a status other than 1..3, a fence that is not a whole number in 0..2^53 - 1, a deadline that is not finite, or owner and fingerprint lengths past
 * the value's end (in format 2, the origin section's too, or an empty origin). Such a value was not written by a
 * store (by hand, or corrupted): a forced release or a delete would turn it into a tombstone
 * (and the fence memory into garbage) while the caller is told it failed, or that it worked.
 */
const SANE = `if st and not (st >= 1 and st <= 3 and f - f == 0 and f >= 0 and f % 1 == 0
  and f <= 9007199254740991 and lu - lu == 0 and ex - ex == 0
  and ${HEADER_BYTES} + ol + fl <= #v
  and (fmt ~= ${ORIGIN_FORMAT} or (${HEADER_BYTES + 4} + ol + fl <= #v
    and struct.unpack('>I4', v, ${HEADER_BYTES + 1} + ol + fl) > 0
    and ${HEADER_BYTES + 4} + ol + fl + struct.unpack('>I4', v, ${HEADER_BYTES + 1} + ol + fl) <= #v))) then
  return redis.error_reply('idem: malformed record (not written by a store): left as it is')
end
`;

/**
 * KEYS: record. Returns `{now}` when there is no live record, else `{now, head, outcomeBytes}`:
 * the record's header, owner, fingerprint and origin section (raw bytes of this layout; a
 * record of the earlier layout converted) and the length of the outcome after them, which an
 * inspection reports and never reads (a 10 MB outcome took 1.3 s to fetch for its size). A
 * value whose lengths run past its end is answered whole, for the decoder to refuse.
 */
export const INSPECT_LUA = `${READ_NOW}${LEGACY}if not st or not (now < ex) then return {now} end
local kept = ${HEADER_BYTES} + ol + fl
if fmt == ${ORIGIN_FORMAT} and kept + 4 <= #v then kept = kept + 4 + struct.unpack('>I4', v, kept + 1) end
if kept > #v then return {now, v} end
return {now, string.sub(v, 1, kept), #v - kept}
`;

/**
 * KEYS: record, fence memory. ARGV: the new owner token, fenceMemoryMs, the expected owner
 * and the expected fence (each `''` for any).
 * Returns `{0}` when there is no live record, `{1}` when it is not in progress (left as it
 * is), `{3, fence, owner}` when it is in progress but not with the expected owner or fence
 * (left as it is), `{2, fence, previousOwner}` when it became a released tombstone with
 * fence + 1 and the new owner (its retention deadline kept; the fence memory records the new
 * fence). The tombstone keeps the record's origin (format 2: the new owner is not it), so
 * the retry that acquires it continues the logical request.
 */
export const FORCE_RELEASE_LUA = `${READ_NOW}${LEGACY}${SANE}if not st or not (now < ex) then return {0} end
if st ~= 1 then return {1} end
local previous = string.sub(v, ${HEADER_BYTES + 1}, ${HEADER_BYTES} + ol)
if (ARGV[3] ~= '' and ARGV[3] ~= previous) or (ARGV[4] ~= '' and tonumber(ARGV[4]) ~= f) then
  return {3, f, previous}
end
if f >= 9007199254740991 then return redis.error_reply('idem: no fence left below 2^53 for this key') end
local fingerprint = string.sub(v, ${HEADER_BYTES + 1} + ol, ${HEADER_BYTES} + ol + fl)
local origin = previous
if fmt == ${ORIGIN_FORMAT} then
  ${CARRIED_ORIGIN}
end
local memory = tonumber(ARGV[2])
local expiresAt = ex
f = f + 1
fm = 0
${REMEMBER}
redis.call('SET', KEYS[1], ${withOrigin(3, 'f, now, expiresAt, fm', 'ARGV[1]', 'fingerprint', 'origin')})
redis.call('PEXPIREAT', KEYS[1], string.format('%d', expiresAt - 1))
return {2, f, previous}
`;

/**
 * KEYS: record. ARGV: fenceMemoryMs, the expected status (1..3), owner and fence (each `''`
 * for any). Deletes a live record (any layout, any status, not a malformed one: see {@link
 * SANE}; the fence memory key stays, so fences keep growing), only while it holds the status,
 * owner and fence expected. Without fence memory (`fenceMemoryMs` 0) it becomes a tombstone
 * that holds only its fence (released, expired now, no owner, fingerprint or outcome) until
 * the deleted record's own deadline: the next execution takes fence + 1, not 1 again (a live
 * stream and a resume of generation 1 would otherwise be the deleted execution's). Either way
 * the record's origin is gone: the next acquisition begins a new logical request. A value
 * that is not live (such a tombstone, or a record whose deadline passed) is left as it is:
 * deleting the tombstone would forget the fence before that deadline. Returns `{1}` when a
 * live record was deleted, `{0}` when there was none, `{3, status, fence, owner}` when the
 * live record does not hold the status, owner or fence expected (left as it is).
 */
export const DELETE_LUA = `${READ_NOW}${LEGACY}${SANE}if not st or not (now < ex) then return {0} end
local owner = string.sub(v, ${HEADER_BYTES + 1}, ${HEADER_BYTES} + ol)
if (ARGV[2] ~= '' and tonumber(ARGV[2]) ~= st) or (ARGV[3] ~= '' and ARGV[3] ~= owner)
  or (ARGV[4] ~= '' and tonumber(ARGV[4]) ~= f) then
  return {3, st, f, owner}
end
if tonumber(ARGV[1]) == 0 then
  ${setRecord(
    `struct.pack(${HEADER}, ${RECORD_FORMAT}, 3, f, now, now, 0, 0, 0)`,
    `string.format('%d', ex - 1)`,
  )}
  return {1}
end
redis.call('DEL', KEYS[1])
return {1}
`;
