import type { AttributeValue } from '@aws-sdk/client-dynamodb';

// The requests this store sends. Placeholders (#st, #ow, ...) map to the configured
// attribute names (see record-item.ts); every expression is a constant, so a request differs
// from another of its kind only in its values.

export const IN_PROGRESS: AttributeValue = { S: 'in_progress' };
export const COMPLETED: AttributeValue = { S: 'completed' };
export const RELEASED: AttributeValue = { S: 'released' };
// Each retry follows a write of another caller that changed the item; more than this many in
// a row only happens if the item is not an idem record or the service misbehaves.
export const MAX_ACQUIRE_ATTEMPTS = 8;
// Core derives storage keys of 64 characters and owners of 22; the declared limit assumes
// a little more, and `complete` measures the real ones.
export const TYPICAL_KEY_LENGTH = 64;
export const TYPICAL_OWNER_LENGTH = 64;

export const num = (value: number): AttributeValue => ({ N: String(value) });
export const ttlOf = (expiresAt: number): AttributeValue => num(Math.ceil(expiresAt / 1000));

// Acquire as one conditional upsert. The condition is "the key is free", decided by the
// caller's clock; the fence is computed by the service from the stored one, so it stays
// monotonic without reading first. On failure the service returns the live item (ALL_OLD).
// A passed lease is taken over only from another owner: the caller's own in-progress record
// fails the condition, and the store renews that lease instead (a redelivered acquire keeps
// its fence).
//
// The upsert comes in two forms, one per origin rule, because an update expression cannot
// choose a value by the item's state (only the condition can look at it). Their conditions
// split "the key is free" in two, so each applies only where its origin is the right one:
// - "begins": no item, or its retention passed (whatever its status: DynamoDB keeps an
//   expired item until TTL deletion). A new logical request: origin = the new owner.
// - "continues": a live released tombstone, or a live in-progress record of another owner
//   whose lease passed. The item's origin is carried over (`if_not_exists(#og, #ow)`: an item
//   written before stores kept an origin counts its owner; every operand of an update
//   expression reads the item as it was before the update, so `#ow` is the old owner).
// The store picks the form from the item it last saw (the create's or the other form's
// ALL_OLD, or a tombstone it released); an item that is not in that form's state refuses it
// with ALL_OLD and the store sends the other. The answer's origin comes from the ALL_OLD
// values of the write that applied: no extra request.
const ACQUIRE_SET =
  'SET #st = :inProgress, #fp = :fingerprint, #ow = :owner, #fe = if_not_exists(#fe, :zero) + :one, ' +
  '#lu = :leaseUntil, #ex = :expiresAt, #tt = :ttl';
export const ACQUIRE_BEGIN_UPDATE = `${ACQUIRE_SET}, #og = :owner REMOVE #oc, #oe`;
export const ACQUIRE_BEGIN_CONDITION = 'attribute_not_exists(#pk) OR #ex <= :now';
export const ACQUIRE_CONTINUE_UPDATE = `${ACQUIRE_SET}, #og = if_not_exists(#og, #ow) REMOVE #oc, #oe`;
// The continuing form also holds the origin it carries to what a store writes (absent, or a
// non-empty string): an item with another (by hand, or corrupted) refuses it, comes back with
// the refusal and is refused by the reader, so a key this store released, whose upsert is
// sent without a read, never carries it into a record before anything checked it.
export const ACQUIRE_CONTINUE_CONDITION =
  '#ex > :now AND (#st = :released OR (#st = :inProgress AND #lu <= :now AND #ow <> :owner)) AND ' +
  '(attribute_not_exists(#og) OR (attribute_type(#og, :string) AND size(#og) > :zero))';
// The first acquisition of a key the table has never held (or whose item TTL deleted): a
// conditional PutItem of the whole record with fence 1, which is what the upsert above would
// compute there. DynamoDB Local spends less on a PutItem than on an UpdateItem, and so does
// the SDK (no expressions to send); any other state fails it with the live item, and the
// upsert decides. It writes the origin too (the new owner: a new logical request).
export const CREATE_CONDITION = 'attribute_not_exists(#pk)';
// Owner-checked writes: the caller's own in-progress record that has not expired (a passed
// lease is fine as long as nobody took it over: that would have changed the owner).
export const OWNED_CONDITION = '#ow = :owner AND #st = :inProgress AND #ex > :now';
// The same check as a PutItem's condition, for a completion or release that writes the
// whole item: the owner's process remembers the fence and lease it last wrote, and the
// condition checks them too, so an item another write changed in between (a heartbeat
// whose answer was lost, a racing one, a redelivered acquire after a release) refuses the
// PutItem and the store falls back to the UpdateItem above. A live item of this owner holds
// nothing else: its acquisition wrote every attribute, and every other writer changes the
// owner, the fence or the lease.
export const OWNED_PUT_CONDITION = `${OWNED_CONDITION} AND #fe = :fence AND #lu = :heldLease`;
// Owner leases a store remembers for the PutItem completion; past this, the oldest are
// forgotten and their completion is the UpdateItem.
export const MAX_HELD_LEASES = 10_000;

/**
 * How far behind elapsed time the clock must read for a renewal to count it stepped back (see
 * the store's `countFrom`): more than NTP slews (it steps an offset past 128 ms).
 */
export const CLOCK_STEP_MS = 100;
export const COMPLETE_UPDATE = 'SET #st = :completed, #ex = :expiresAt, #tt = :ttl, #oc = :outcome';
export const COMPLETE_UPDATE_ENCODED = `${COMPLETE_UPDATE}, #oe = :encoding`;
export const RELEASE_UPDATE = 'SET #st = :released, #lu = :now, #ex = :expiresAt, #tt = :ttl';
export const EXTEND_UPDATE = 'SET #lu = :leaseUntil, #ex = :expiresAt, #tt = :ttl';
// A renewal never moves the lease back: one that reaches DynamoDB after a later renewal of the
// same owner (held up in the network after its caller gave up on it) fails this condition
// instead of shortening the lease the later one granted, which another caller could then take
// over while the owner still runs on the lease it was told it has. The refused renewal of the
// owner's own record whose lease already runs later answers ok (see `renew`).
export const EXTEND_CONDITION = `${OWNED_CONDITION} AND #lu <= :leaseUntil`;
// Operator writes decide on the item they read first (a consistent GetItem) and write only
// that item: a condition cannot tell a whole number from a fraction, so an item a store did
// not write (a fence of another type, negative, fractional or past 2^53, no fingerprint, an
// unknown status) is refused by the reader before anything is sent, and the write's
// condition holds it to what was read (status, owner, fence, attribute types). Any write
// of another caller in between changes one of them and fails the condition; the admin then
// decides again on the item it brings back, at most this many times in a row.
export const MAX_ADMIN_ATTEMPTS = 8;
export const STRING_TYPE: AttributeValue = { S: 'S' };
export const NUMBER_TYPE: AttributeValue = { S: 'N' };
const AS_READ =
  '#ow = :seenOwner AND #fe = :seenFence AND attribute_type(#fp, :string) AND attribute_type(#lu, :number)';
// An operator's forced release: the unexpired in-progress record that was read (lease live or
// passed) becomes a tombstone with fence + 1 and an owner no executor holds; its expiry is kept,
// and so is its origin, for the retry that continues the logical request (an item without
// one gets its owner's, read before the owner changes, not the operator's token).
export const FORCE_RELEASE_CONDITION = `#st = :inProgress AND #ex > :now AND ${AS_READ}`;
export const FORCE_RELEASE_UPDATE =
  'SET #st = :released, #ow = :owner, #fe = :nextFence, #lu = :now, #og = if_not_exists(#og, #ow)';
// An operator's delete: the item read (any status, live or expired) becomes an expired
// tombstone that holds only the fence (the next acquire takes it with fence + 1), with a fresh
// owner and no fingerprint, outcome or origin (the next acquisition begins a new logical
// request: an expired item takes the "begins" upsert, and no origin is left to carry). Its
// TTL attribute is kept, so DynamoDB's TTL deletion (which forgets the fence) comes no
// earlier than the deleted record's own retention would have let it. Its expiry as read is
// part of the condition: whether a live record was deleted is decided on it, and so are its
// status, owner and fence as read: an operator's expectation, compared with the item read,
// holds at the write (another caller's write in between refuses it). Any other item
// at the key (another application's, or a store configured with other attribute names) is
// refused by the reader, not half-written.
export const DELETE_CONDITION = `#st = :seenStatus AND #ex = :seenExpires AND ${AS_READ}`;
export const DELETE_UPDATE =
  'SET #st = :released, #ow = :owner, #fp = :none, #lu = :now, #ex = :now REMOVE #oc, #oe, #og';
