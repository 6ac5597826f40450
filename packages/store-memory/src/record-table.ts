import type { StoredRecord } from '@idem/core';
import { DeadlineHeap } from './deadline-heap.js';
import type { HeldOutcome } from './held-outcome.js';

/** A record as the table holds it: the outcome in its held form (see held-outcome.ts). */
export interface HeldRecord extends Omit<StoredRecord, 'outcome'> {
  outcome?: HeldOutcome;
}

/**
 * Estimated bytes one record costs beyond its strings and outcome: the record and slot
 * objects, map and queue entries. Measured with `scripts/record-overhead.mjs` (about 650 to
 * 710 bytes on Node 20 when the queues kept stale entries, about 300 since each record sits
 * once in each queue); kept on the safe side.
 */
export const RECORD_OVERHEAD_BYTES = 768;

/** Estimated bytes an outcome costs beyond its length (typed array, buffer, backing store). */
export const OUTCOME_OVERHEAD_BYTES = 512;

/**
 * Largest outcome whose `complete` never needs more room: every in-progress record holds
 * that much (plus {@link OUTCOME_OVERHEAD_BYTES}) in reserve, so the final marker core
 * records when the real outcome does not fit always fits.
 */
export const MARKER_OUTCOME_BYTES = 1024;

/**
 * One stored record, what it is accounted for, and where it sits in the eviction queues: one
 * object a record (the record's fields are the slot's own, changed in place by the table), so
 * a store holding many records holds one object less each, and a write allocates none.
 */
export class Slot implements HeldRecord {
  status: HeldRecord['status'];
  fingerprint: string;
  owner: string;
  /** Owner token of the acquisition that began the logical request (`owner` when it did). */
  origin: string;
  fence: number;
  leaseUntil: number;
  expiresAt: number;
  outcome: HeldOutcome | undefined;
  /** Accounted bytes of the key, fingerprint, owner and origin (they never change for one slot). */
  readonly strings: number;
  /** Accounted bytes, see {@link recordCost}. */
  cost: number;
  /** Positions in the queues by expiry, by lease and by release (-1: not in it). */
  expiryAt = -1;
  leaseAt = -1;
  releaseAt = -1;

  constructor(
    readonly key: string,
    record: HeldRecord,
  ) {
    this.status = record.status;
    this.fingerprint = record.fingerprint;
    this.owner = record.owner;
    this.origin = record.origin ?? record.owner;
    this.fence = record.fence;
    this.leaseUntil = record.leaseUntil;
    this.expiresAt = record.expiresAt;
    this.outcome = record.outcome;
    this.strings =
      stringBytes(key) +
      stringBytes(record.fingerprint) +
      stringBytes(record.owner) +
      // A carried origin is another string; a record that began its request holds one.
      (this.origin === record.owner ? 0 : stringBytes(this.origin));
    this.cost = recordCost(this.strings, record);
  }

  /**
   * The record the slot holds: the slot itself, so only while it holds it (a later write
   * changes it); callers that keep a record copy it.
   */
  get record(): HeldRecord {
    return this;
  }
}

/**
 * Bytes V8 keeps for a string's characters: one a character when they all fit in Latin-1,
 * else two.
 */
export function stringBytes(value: string): number {
  for (let i = 0; i < value.length; i++) {
    if (value.charCodeAt(i) > 0xff) return 2 * value.length;
  }
  return value.length;
}

/** Accounted bytes of a record: estimated overhead, its strings, and its outcome or the marker reserve. */
export function recordCost(strings: number, record: HeldRecord): number {
  return costOf(strings, record.status, record.outcome);
}

/** {@link recordCost} of a record with `status` and `outcome`. */
export function costOf(
  strings: number,
  status: HeldRecord['status'],
  outcome: HeldOutcome | undefined,
): number {
  let payload = 0;
  if (status === 'completed') {
    payload = OUTCOME_OVERHEAD_BYTES + (outcome?.length ?? 0);
  } else if (status === 'in_progress') {
    payload = OUTCOME_OVERHEAD_BYTES + MARKER_OUTCOME_BYTES;
  }
  return RECORD_OVERHEAD_BYTES + strings + payload;
}

/**
 * Estimated bytes one {@link Remnant} costs beyond its strings (key, origin, and a passed
 * lease's owner when it is not the origin): the remnant object, its map entry and its queue
 * entry. Measured with `scripts/record-overhead.mjs`
 * (case `evicted`); kept on the safe side.
 */
export const REMNANT_OVERHEAD_BYTES = 256;

/**
 * What an evicted live record (a released tombstone or a passed lease, within its retention)
 * leaves behind until its `expiresAt`: the origin of its logical request, so that the retry
 * or the takeover that acquires the key next carries it on (the store contract's "Origin"),
 * and whether it was in progress (that acquisition is then a takeover; a passed lease's
 * owner and fence are kept too, for its redelivered acquire). A new record's fence starts
 * above the table's fence floor. A remnant is evicted before it expires only with
 * `forgetOrigins`: the table frees room by turning records into remnants, which cost far
 * less (their overhead and two or three strings against a record's overhead, four strings
 * and its outcome reserve).
 */
export class Remnant {
  /** Position in the queue by expiry (-1: not in it). */
  expiryAt = -1;

  constructor(
    readonly key: string,
    readonly origin: string,
    readonly expiresAt: number,
    readonly takeover: boolean,
    readonly cost: number,
    /**
     * Owner and fence of an evicted passed lease (undefined for a tombstone): its owner's
     * redelivered acquire is answered as its own acquisition, at the same fence.
     */
    readonly owner: string | undefined = undefined,
    readonly fence = 0,
  ) {}
}

/** A slot for a record at `key` (not yet in any table). */
export function newSlot(key: string, record: HeldRecord): Slot {
  return new Slot(key, record);
}

/**
 * The records of one memory store with their accounting and eviction order. Eviction looks
 * only at the head of three queues (O(log n) a record), never scans the table: records by
 * `expiresAt`, released tombstones in release order, and in-progress records by
 * `leaseUntil`. Each record sits once in each queue it belongs to and leaves it when it is
 * removed, so the queues never hold more than the table. Completed records within retention
 * and live leases are in no queue that eviction may take from before they expire.
 */
export class RecordTable {
  private readonly slots = new Map<string, Slot>();
  private readonly byExpiry = new DeadlineHeap<Slot>(
    (slot) => slot.expiryAt,
    (slot, at) => {
      slot.expiryAt = at;
    },
  );
  private readonly byLease = new DeadlineHeap<Slot>(
    (slot) => slot.leaseAt,
    (slot, at) => {
      slot.leaseAt = at;
    },
  );
  private readonly byRelease = new DeadlineHeap<Slot>(
    (slot) => slot.releaseAt,
    (slot, at) => {
      slot.releaseAt = at;
    },
  );
  /** Remnants of evicted live records by key (never a key the table holds a slot for). */
  private readonly remnants = new Map<string, Remnant>();
  private readonly remnantsByExpiry = new DeadlineHeap<Remnant>(
    (remnant) => remnant.expiryAt,
    (remnant, at) => {
      remnant.expiryAt = at;
    },
  );
  private releases = 0;
  /** Sum of every slot's and every remnant's cost. */
  bytes = 0;
  /** Sum of every remnant's cost (part of {@link bytes}). */
  private remnantBytes = 0;
  /** Highest fence of every forgotten record: a new record starts above it. */
  fenceFloor = 0;

  /**
   * @param forgetOrigins when only live records and remnants are left and bytes are short,
   * evict the oldest remnants too (their origins are forgotten) instead of refusing
   * (`MemoryStoreOptions.forgetOriginsWhenFull`).
   */
  constructor(
    private readonly maxEntries: number,
    private readonly maxBytes: number,
    private readonly forgetOrigins = false,
  ) {}

  get size(): number {
    return this.slots.size;
  }

  /** Records in progress (each sits once in the queue by lease), passed leases included. */
  get inProgress(): number {
    return this.byLease.length;
  }

  /** Entries in the eviction queues (never more than three a record and one a remnant). */
  get queued(): number {
    return (
      this.byExpiry.length +
      this.byLease.length +
      this.byRelease.length +
      this.remnantsByExpiry.length
    );
  }

  /** Bytes of the remnants held (part of {@link bytes}), expired ones not yet swept included. */
  get remnantBytesHeld(): number {
    return this.remnantBytes;
  }

  /** Remnants held (see {@link Remnant}), expired ones not yet swept included. */
  get remnantCount(): number {
    return this.remnants.size;
  }

  /**
   * The remnant at `key` unless it has expired at `now` (an expired one is removed). Only a
   * key without a live slot has one.
   */
  remnant(key: string, now: number): Remnant | undefined {
    if (this.remnants.size === 0) return undefined;
    const remnant = this.remnants.get(key);
    if (remnant && now >= remnant.expiresAt) {
      this.forgetRemnant(remnant);
      return undefined;
    }
    return remnant;
  }

  /** Forgets the remnant at `key`, if any (an operator's `delete`: the origin goes too). */
  forgetRemnantAt(key: string): void {
    const remnant = this.remnants.get(key);
    if (remnant) this.forgetRemnant(remnant);
  }

  /** The slot at `key` unless it has expired at `now` (an expired one is removed). */
  live(key: string, now: number): Slot | undefined {
    const slot = this.slots.get(key);
    if (slot && now >= slot.expiresAt) {
      this.remove(slot);
      return undefined;
    }
    return slot;
  }

  /** Adds a record at a key that has none; the key's remnant, if any, goes (the record carries its origin on). */
  insert(slot: Slot): void {
    if (this.remnants.size > 0) this.forgetRemnantAt(slot.key);
    this.slots.set(slot.key, slot);
    this.bytes += slot.cost;
    this.track(slot);
  }

  /** Replaces a slot's record (same key, fingerprint and owner), keeping the accounting and queues right. */
  replace(slot: Slot, record: HeldRecord): void {
    slot.fingerprint = record.fingerprint;
    slot.owner = record.owner;
    slot.origin = record.origin ?? record.owner;
    slot.fence = record.fence;
    this.update(slot, record.status, record.leaseUntil, record.expiresAt, record.outcome);
  }

  /** {@link replace} of what a write changes (the slot's fingerprint, owner and fence stay). */
  update(
    slot: Slot,
    status: HeldRecord['status'],
    leaseUntil: number,
    expiresAt: number,
    outcome: HeldOutcome | undefined,
  ): void {
    slot.status = status;
    slot.leaseUntil = leaseUntil;
    slot.expiresAt = expiresAt;
    slot.outcome = outcome;
    this.bytes -= slot.cost;
    slot.cost = costOf(slot.strings, status, outcome);
    this.bytes += slot.cost;
    this.track(slot);
  }

  /** Forgets a record, raising the fence floor to its fence; false if the table did not hold it. */
  remove(slot: Slot): boolean {
    // Out of the queues first, whatever the map says: an eviction loop that meets a slot
    // the table no longer holds still makes progress (it cannot happen today, see
    // test/record-table-property.test.ts; this keeps a future slip from looping for ever).
    this.byExpiry.delete(slot);
    this.byLease.delete(slot);
    this.byRelease.delete(slot);
    if (this.slots.get(slot.key) !== slot) return false;
    this.slots.delete(slot.key);
    this.bytes -= slot.cost;
    if (slot.fence > this.fenceFloor) this.fenceFloor = slot.fence;
    return true;
  }

  /** Whether `entries` more records and `bytes` more bytes would fit now. */
  fits(entries: number, bytes: number): boolean {
    return this.slots.size + entries <= this.maxEntries && this.bytes + bytes <= this.maxBytes;
  }

  /**
   * Frees room for `entries` records and `bytes` bytes: expired remnants and records first,
   * then released tombstones (oldest release first), then in-progress records whose lease
   * has passed (oldest lease first), never `keep`. A tombstone or passed lease evicted (both
   * within their retention) leaves a {@link Remnant} in its place, which costs bytes but no
   * entry. Then, with `forgetOrigins` and bytes short, the remnants that expire first (never
   * `keepRemnant`, the remnant the caller's record replaces), and only when forgetting them
   * all would be enough: a call refused in the end forgets no origin.
   * Returns false when that is not enough: what is left is live leases, completed records
   * within retention and remnants, which are never dropped before they expire. What
   * could not fit even beside `keep` (or `keepRemnant`) alone is refused before anything is evicted, and passed
   * leases evicted by a call that is refused in the end are put back as they were: their
   * owners may only be late (a held event loop) and can still renew or complete, which an
   * eviction for nothing would have turned into not-owner answers and a second execution.
   */
  makeRoom(
    now: number,
    entries: number,
    bytes: number | (() => number),
    keep?: Slot,
    keepRemnant?: Remnant,
  ): boolean {
    const kept = keep === undefined ? 0 : 1;
    // `bytes` as a function is read again after every eviction (the room an acquire keeps
    // for outcomes shrinks as passed leases go).
    const needed = typeof bytes === 'function' ? bytes : () => bytes;
    const keptBytes = (keep?.cost ?? 0) + (keepRemnant?.cost ?? 0);
    if (entries + kept > this.maxEntries || needed() + keptBytes > this.maxBytes) {
      return false;
    }
    // Made only when a passed lease goes: most calls fit at once (no allocation on that path).
    let passed: Slot[] | undefined;
    let floorOfOthers = this.fenceFloor;
    while (!this.fits(entries, needed())) {
      if (this.evictExpiredRemnant(now)) continue;
      const other = this.evictExpired(now) ?? this.evictTombstone(keep);
      if (other !== undefined) {
        if (other.fence > floorOfOthers) floorOfOthers = other.fence;
        continue;
      }
      const lease = this.evictPassedLease(now, keep);
      // Remnants hold bytes, no entry: forgotten (when allowed) only where bytes are short.
      if (
        lease === undefined &&
        this.forgetOrigins &&
        this.slots.size + entries <= this.maxEntries &&
        this.bytes - this.forgettable(keepRemnant) + needed() <= this.maxBytes &&
        this.evictOldestRemnant(keepRemnant)
      ) {
        continue;
      }
      if (lease === undefined) {
        if (passed !== undefined) {
          // Each takes its remnant's place again (insert forgets it).
          for (const slot of passed) this.insert(slot);
          this.fenceFloor = floorOfOthers;
        }
        return false;
      }
      if (passed === undefined) passed = [lease];
      else passed.push(lease);
    }
    return true;
  }

  /** Removes every record and remnant expired at `now`; returns how many records. */
  sweep(now: number): number {
    let removed = 0;
    while (this.evictExpired(now) !== undefined) removed++;
    while (this.evictExpiredRemnant(now));
    return removed;
  }

  private track(slot: Slot): void {
    this.byExpiry.set(slot, slot.expiresAt);
    if (slot.status === 'in_progress') this.byLease.set(slot, slot.leaseUntil);
    else this.byLease.delete(slot);
    if (slot.status !== 'released') this.byRelease.delete(slot);
    else if (!this.byRelease.has(slot)) this.byRelease.set(slot, ++this.releases);
  }

  private evictExpired(now: number): Slot | undefined {
    const slot = this.byExpiry.peek();
    if (slot === undefined || now < slot.expiresAt) return undefined;
    this.remove(slot);
    return slot;
  }

  /** Bytes of the remnants held but `keep`. */
  private forgettable(keep: Remnant | undefined): number {
    const kept = keep !== undefined && this.remnants.get(keep.key) === keep ? keep.cost : 0;
    return this.remnantBytes - kept;
  }

  private evictOldestRemnant(keep: Remnant | undefined): boolean {
    const remnant = this.remnantsByExpiry.peekExcept(keep);
    if (remnant === undefined) return false;
    this.forgetRemnant(remnant);
    return true;
  }

  private evictExpiredRemnant(now: number): boolean {
    const remnant = this.remnantsByExpiry.peek();
    if (remnant === undefined || now < remnant.expiresAt) return false;
    this.forgetRemnant(remnant);
    return true;
  }

  // A tombstone or passed lease is evicted only when no record has expired (the queue by
  // expiry is taken first), so it is within its retention: it leaves a remnant.
  private evictTombstone(keep: Slot | undefined): Slot | undefined {
    const slot = this.byRelease.peekExcept(keep);
    if (slot === undefined) return undefined;
    this.evictLive(slot);
    return slot;
  }

  private evictPassedLease(now: number, keep: Slot | undefined): Slot | undefined {
    const slot = this.byLease.peekExcept(keep);
    if (slot === undefined || now < slot.leaseUntil) return undefined;
    this.evictLive(slot);
    return slot;
  }

  /** Removes a live slot, leaving its remnant (which costs less: see {@link Remnant}). */
  private evictLive(slot: Slot): void {
    // A slot the table no longer holds (see remove) leaves nothing: its key is another's.
    if (!this.remove(slot)) return;
    const leased = slot.status === 'in_progress';
    // The owner is one more string only when it did not begin the request (a takeover's).
    const owner = leased && slot.owner !== slot.origin ? stringBytes(slot.owner) : 0;
    const cost = REMNANT_OVERHEAD_BYTES + stringBytes(slot.key) + stringBytes(slot.origin) + owner;
    const remnant = new Remnant(
      slot.key,
      slot.origin,
      slot.expiresAt,
      leased,
      cost,
      leased ? slot.owner : undefined,
      slot.fence,
    );
    this.remnants.set(slot.key, remnant);
    this.remnantsByExpiry.set(remnant, remnant.expiresAt);
    this.bytes += cost;
    this.remnantBytes += cost;
  }

  private forgetRemnant(remnant: Remnant): void {
    this.remnantsByExpiry.delete(remnant);
    if (this.remnants.get(remnant.key) !== remnant) return;
    this.remnants.delete(remnant.key);
    this.bytes -= remnant.cost;
    this.remnantBytes -= remnant.cost;
  }
}
