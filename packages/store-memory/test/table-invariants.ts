import type { DeadlineHeap } from '../src/deadline-heap.js';
import type { MemoryStore } from '../src/index.js';
import {
  REMNANT_OVERHEAD_BYTES,
  RecordTable,
  type Remnant,
  recordCost,
  type Slot,
  stringBytes,
} from '../src/record-table.js';

/** What the tests read of a table's private state. */
interface TableInside {
  slots: Map<string, Slot>;
  byExpiry: DeadlineHeap<Slot>;
  byLease: DeadlineHeap<Slot>;
  byRelease: DeadlineHeap<Slot>;
  remnants: Map<string, Remnant>;
  remnantsByExpiry: DeadlineHeap<Remnant>;
  remnantBytes: number;
}

/** What the tests read of a heap's private state. */
interface HeapInside {
  deadlines: number[];
  items: Slot[];
}

const inside = (table: RecordTable) => table as unknown as TableInside;

type Position = 'expiryAt' | 'leaseAt' | 'releaseAt';

/** Throws with `message` unless `ok` (plain checks: they run after every step of every run). */
function check(ok: boolean, message: () => string): void {
  if (!ok) throw new Error(`table invariant broken: ${message()}`);
}

/**
 * Checks one heap: every entry is the map's current slot for its key, sits where its
 * position says (so at most once), has the deadline `deadlineOf` gives (when given), and
 * no entry is earlier than its parent.
 */
function checkHeap(
  name: string,
  heap: DeadlineHeap<Slot>,
  slots: Map<string, Slot>,
  position: Position,
  deadlineOf?: (slot: Slot) => number,
): Set<Slot> {
  const { deadlines, items } = heap as unknown as HeapInside;
  check(
    deadlines.length === items.length,
    () => `${name}: ${deadlines.length} deadlines, ${items.length} items`,
  );
  const seen = new Set<Slot>();
  for (let i = 0; i < items.length; i++) {
    const slot = items[i] as Slot;
    const at = deadlines[i] as number;
    check(slots.get(slot.key) === slot, () => `${name}[${i}] (${slot.key}) is not in the table`);
    check(
      slot[position] === i,
      () => `${name}[${i}] (${slot.key}) says it is at ${slot[position]}`,
    );
    seen.add(slot);
    check(!Number.isNaN(at), () => `${name}[${i}] (${slot.key}) has a NaN deadline`);
    if (deadlineOf)
      check(
        at === deadlineOf(slot),
        () => `${name}[${i}] (${slot.key}): deadline ${at}, record ${deadlineOf(slot)}`,
      );
    if (i > 0)
      check((deadlines[(i - 1) >> 1] as number) <= at, () => `${name}: heap order broken at ${i}`);
  }
  return seen;
}

/**
 * Checks every invariant of a table that bounded-time eviction rests on: the queues hold
 * exactly the table's slots (each once, in heap order, by the record's current deadlines),
 * the bytes are the sum of the costs, and each cost is that of the slot's record. `gone`
 * are slots the caller knows were removed: they must be in no queue, and the fence floor at
 * or above their fences.
 */
export function checkTable(table: RecordTable, gone: Iterable<Slot> = []): void {
  const { slots, byExpiry, byLease, byRelease } = inside(table);
  const expiring = checkHeap('byExpiry', byExpiry, slots, 'expiryAt', (s) => s.record.expiresAt);
  const leased = checkHeap('byLease', byLease, slots, 'leaseAt', (s) => s.record.leaseUntil);
  const released = checkHeap('byRelease', byRelease, slots, 'releaseAt');
  let bytes = 0;
  for (const [key, slot] of slots) {
    check(slot.key === key, () => `${key}: slot of ${slot.key}`);
    check(slot.cost === recordCost(slot.strings, slot.record), () => `${key}: cost ${slot.cost}`);
    bytes += slot.cost;
    const { status } = slot.record;
    check(expiring.has(slot), () => `${key} (${status}) not in byExpiry`);
    check(
      leased.has(slot) === (status === 'in_progress'),
      () => `${key} (${status}) in byLease: ${leased.has(slot)}`,
    );
    check(
      released.has(slot) === (status === 'released'),
      () => `${key} (${status}) in byRelease: ${released.has(slot)}`,
    );
  }
  // Remnants: one a key the table holds no slot for, each once in its queue by expiry, at
  // the cost of its overhead and two strings.
  const { remnants, remnantsByExpiry } = inside(table);
  const { deadlines, items } = remnantsByExpiry as unknown as {
    deadlines: number[];
    items: Remnant[];
  };
  check(
    items.length === remnants.size && deadlines.length === items.length,
    () => `remnantsByExpiry: ${items.length} items, ${remnants.size} remnants`,
  );
  for (let i = 0; i < items.length; i++) {
    const remnant = items[i] as Remnant;
    check(remnants.get(remnant.key) === remnant, () => `remnant ${remnant.key} not in the map`);
    check(remnant.expiryAt === i, () => `remnant ${remnant.key} says it is at ${remnant.expiryAt}`);
    check(
      deadlines[i] === remnant.expiresAt,
      () => `remnant ${remnant.key}: deadline ${deadlines[i]}`,
    );
    if (i > 0)
      check(
        (deadlines[(i - 1) >> 1] as number) <= (deadlines[i] as number),
        () => `remnantsByExpiry: heap order broken at ${i}`,
      );
  }
  let remnantBytes = 0;
  for (const [key, remnant] of remnants) {
    check(!slots.has(key), () => `${key} has both a slot and a remnant`);
    check(
      remnant.cost ===
        REMNANT_OVERHEAD_BYTES +
          stringBytes(key) +
          stringBytes(remnant.origin) +
          (remnant.owner === undefined || remnant.owner === remnant.origin
            ? 0
            : stringBytes(remnant.owner)),
      () => `remnant ${key}: cost ${remnant.cost}`,
    );
    remnantBytes += remnant.cost;
  }
  bytes += remnantBytes;
  check(
    inside(table).remnantBytes === remnantBytes,
    () => `remnant bytes ${inside(table).remnantBytes}, sum of their costs ${remnantBytes}`,
  );
  check(table.bytes === bytes, () => `bytes ${table.bytes}, sum of the costs ${bytes}`);
  for (const slot of gone) {
    if (slots.get(slot.key) === slot) continue;
    const at = [slot.expiryAt, slot.leaseAt, slot.releaseAt];
    check(
      at.every((p) => p === -1),
      () => `removed ${slot.key} still queued (${at})`,
    );
    check(
      table.fenceFloor >= slot.record.fence,
      () => `fence floor ${table.fenceFloor} below removed ${slot.key}'s ${slot.record.fence}`,
    );
  }
}

/** The table's current slot at `key`, expired or not. */
export function slotAt(table: RecordTable, key: string): Slot | undefined {
  return inside(table).slots.get(key);
}

/** The table's remnant at `key`, expired or not. */
export function remnantAt(table: RecordTable, key: string): Remnant | undefined {
  return inside(table).remnants.get(key);
}

/** Every remnant in the table. */
export function remnantsOf(table: RecordTable): Remnant[] {
  return [...inside(table).remnants.values()];
}

/** Every slot in the table. */
export function slotsOf(table: RecordTable): Slot[] {
  return [...inside(table).slots.values()];
}

/** Thrown by {@link guardLoops} when one call runs more loop iterations than its bound. */
export class UnboundedLoopError extends Error {}

/**
 * Counts the iterations of the table's eviction loops on every `RecordTable` (each
 * `makeRoom` iteration calls `fits` once; each `sweep` iteration calls `evictExpired` once)
 * and throws {@link UnboundedLoopError} as soon as one call runs more iterations than the
 * records and remnants it could evict plus two: a loop that would never end fails the test instead of
 * hanging it. `most()` is the most iterations one call took.
 */
export function guardLoops(): { restore: () => void; most: () => number } {
  type Method = (this: RecordTable, ...args: unknown[]) => unknown;
  const proto = RecordTable.prototype as unknown as Record<string, Method>;
  const saved = {
    makeRoom: proto.makeRoom as Method,
    sweep: proto.sweep as Method,
    fits: proto.fits as Method,
    evictExpired: proto.evictExpired as Method,
    evictExpiredRemnant: proto.evictExpiredRemnant as Method,
  };
  let counting: 'fits' | 'evictExpired' | undefined;
  let budget = 0;
  let used = 0;
  let most = 0;
  const loop = (original: Method, counted: 'fits' | 'evictExpired'): Method =>
    function (this: RecordTable, ...args) {
      if (counting !== undefined) throw new Error('eviction loops do not nest');
      counting = counted;
      // Each record evicted may leave a remnant that is evicted in turn (forgetOrigins).
      budget = 2 * this.size + this.remnantCount + 2;
      used = 0;
      try {
        return original.apply(this, args);
      } finally {
        counting = undefined;
      }
    };
  const counted = (original: Method, name: 'fits' | 'evictExpired'): Method =>
    function (this: RecordTable, ...args) {
      if (counting === name) {
        used++;
        most = Math.max(most, used);
        if (used > budget) {
          throw new UnboundedLoopError(
            `${name} called ${used} times in one loop (bound ${budget})`,
          );
        }
      }
      return original.apply(this, args);
    };
  proto.makeRoom = loop(saved.makeRoom, 'fits');
  proto.sweep = loop(saved.sweep, 'evictExpired');
  proto.fits = counted(saved.fits, 'fits');
  proto.evictExpired = counted(saved.evictExpired, 'evictExpired');
  proto.evictExpiredRemnant = counted(saved.evictExpiredRemnant, 'evictExpired');
  return {
    restore: () => Object.assign(proto, saved),
    most: () => most,
  };
}

/** The store's table, found by wrapping RecordTable.prototype.live once. */
export function probeTable(store: MemoryStore): RecordTable {
  const proto = RecordTable.prototype as unknown as { live: RecordTable['live'] };
  const original = proto.live;
  let found: RecordTable | undefined;
  proto.live = function (this: RecordTable, key: string, now: number) {
    found = this;
    return original.call(this, key, now);
  };
  try {
    void store.get('probe');
  } finally {
    proto.live = original;
  }
  if (!found) throw new Error('no table found');
  return found;
}
