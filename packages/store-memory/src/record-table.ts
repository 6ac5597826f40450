import type { StoredRecord } from '@idem/core';
import { DeadlineHeap } from './deadline-heap.js';

/**
 * Estimated bytes one record costs beyond its strings and outcome: the record and slot
 * objects, map and queue entries. Measured with `scripts/record-overhead.mjs` (about 650 to
 * 710 bytes on Node 20) and rounded up.
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

/** One stored record and what it is accounted for. */
export interface Slot {
  readonly key: string;
  record: StoredRecord;
  /** Accounted bytes, see {@link recordCost}. */
  cost: number;
}

/** Accounted bytes of a record: estimated overhead, its strings, and its outcome or the marker reserve. */
export function recordCost(key: string, record: StoredRecord): number {
  const strings = key.length + record.fingerprint.length + record.owner.length;
  let payload = 0;
  if (record.status === 'completed') {
    payload = OUTCOME_OVERHEAD_BYTES + (record.outcome?.byteLength ?? 0);
  } else if (record.status === 'in_progress') {
    payload = OUTCOME_OVERHEAD_BYTES + MARKER_OUTCOME_BYTES;
  }
  return RECORD_OVERHEAD_BYTES + strings + payload;
}

/**
 * The records of one memory store with their accounting and eviction order. Eviction looks
 * only at the head of three queues (O(log n) a record), never scans the table:
 * expired records by `expiresAt`, released tombstones in release order, and in-progress
 * records by `leaseUntil`. Completed records within retention and live leases are in no
 * queue that eviction may take from before they expire.
 */
export class RecordTable {
  private readonly slots = new Map<string, Slot>();
  private readonly tombstones = new Map<string, Slot>();
  private readonly byExpiry = new DeadlineHeap<Slot>();
  private readonly byLease = new DeadlineHeap<Slot>();
  /** Sum of every slot's cost. */
  bytes = 0;
  /** Highest fence of every forgotten record: a new record starts above it. */
  fenceFloor = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly maxBytes: number,
  ) {}

  get size(): number {
    return this.slots.size;
  }

  /** The slot at `key` unless it has expired at `now` (an expired one is removed). */
  live(key: string, now: number): Slot | undefined {
    const slot = this.slots.get(key);
    if (slot && now >= slot.record.expiresAt) {
      this.remove(slot);
      return undefined;
    }
    return slot;
  }

  /** Adds a record at a key that has none. */
  insert(slot: Slot): void {
    this.slots.set(slot.key, slot);
    this.bytes += slot.cost;
    this.track(slot, undefined);
  }

  /** Replaces a slot's record, keeping the accounting and queues right. */
  replace(slot: Slot, record: StoredRecord): void {
    const previous = slot.record;
    slot.record = record;
    this.bytes -= slot.cost;
    slot.cost = recordCost(slot.key, record);
    this.bytes += slot.cost;
    this.track(slot, previous);
  }

  /** Forgets a record, raising the fence floor to its fence. */
  remove(slot: Slot): void {
    if (this.slots.get(slot.key) !== slot) return;
    this.slots.delete(slot.key);
    this.tombstones.delete(slot.key);
    this.bytes -= slot.cost;
    if (slot.record.fence > this.fenceFloor) this.fenceFloor = slot.record.fence;
    // A stale queue entry may still point at the slot until it is popped: let the outcome go.
    slot.record.outcome = undefined;
  }

  /** Whether `entries` more records and `bytes` more bytes would fit now. */
  fits(entries: number, bytes: number): boolean {
    return this.slots.size + entries <= this.maxEntries && this.bytes + bytes <= this.maxBytes;
  }

  /**
   * Frees room for `entries` records and `bytes` bytes: expired records first, then released
   * tombstones (oldest release first), then in-progress records whose lease has passed
   * (oldest lease first), never `keep`. Returns false when that is not enough: what is left
   * is live leases and completed records within retention, which are never dropped.
   */
  makeRoom(now: number, entries: number, bytes: number, keep?: Slot): boolean {
    while (!this.fits(entries, bytes)) {
      if (
        !(this.evictExpired(now) || this.evictTombstone(keep) || this.evictPassedLease(now, keep))
      )
        return false;
    }
    return true;
  }

  /** Removes every record expired at `now`; returns how many. */
  sweep(now: number): number {
    let removed = 0;
    while (this.evictExpired(now)) removed++;
    return removed;
  }

  private track(slot: Slot, previous: StoredRecord | undefined): void {
    const { record } = slot;
    if (record.expiresAt !== previous?.expiresAt) {
      this.byExpiry.push(record.expiresAt, slot);
      if (this.byExpiry.length > 2 * this.slots.size + 64) {
        this.byExpiry.rebuild([...this.slots.values()].map((s) => [s.record.expiresAt, s]));
      }
    }
    if (record.status === 'released') {
      this.tombstones.delete(slot.key); // re-insert at the end: release order
      this.tombstones.set(slot.key, slot);
    } else if (previous?.status === 'released') {
      this.tombstones.delete(slot.key);
    }
    if (
      record.status === 'in_progress' &&
      (previous?.status !== 'in_progress' || record.leaseUntil !== previous.leaseUntil)
    ) {
      this.byLease.push(record.leaseUntil, slot);
      if (this.byLease.length > 2 * this.slots.size + 64) {
        this.byLease.rebuild(
          [...this.slots.values()]
            .filter((s) => s.record.status === 'in_progress')
            .map((s) => [s.record.leaseUntil, s]),
        );
      }
    }
  }

  private isCurrent(slot: Slot): boolean {
    return this.slots.get(slot.key) === slot;
  }

  private evictExpired(now: number): boolean {
    for (;;) {
      const slot = this.byExpiry.peek();
      const deadline = this.byExpiry.peekDeadline();
      if (slot === undefined || deadline === undefined) return false;
      if (!this.isCurrent(slot) || slot.record.expiresAt !== deadline) {
        this.byExpiry.pop(); // stale entry
        continue;
      }
      if (now < deadline) return false;
      this.byExpiry.pop();
      this.remove(slot);
      return true;
    }
  }

  private evictTombstone(keep: Slot | undefined): boolean {
    for (const slot of this.tombstones.values()) {
      if (slot === keep) continue;
      this.remove(slot);
      return true;
    }
    return false;
  }

  private evictPassedLease(now: number, keep: Slot | undefined): boolean {
    let keptEntry: number | undefined;
    let evicted = false;
    for (;;) {
      const slot = this.byLease.peek();
      const deadline = this.byLease.peekDeadline();
      if (slot === undefined || deadline === undefined) break;
      const current =
        this.isCurrent(slot) &&
        slot.record.status === 'in_progress' &&
        slot.record.leaseUntil === deadline;
      if (!current) {
        this.byLease.pop(); // stale entry
        continue;
      }
      if (now < deadline) break;
      this.byLease.pop();
      if (slot === keep) {
        keptEntry = deadline;
        continue;
      }
      this.remove(slot);
      evicted = true;
      break;
    }
    if (keep !== undefined && keptEntry !== undefined) this.byLease.push(keptEntry, keep);
    return evicted;
  }
}
