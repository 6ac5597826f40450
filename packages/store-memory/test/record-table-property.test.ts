import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HeldRecord, Slot } from '../src/record-table.js';
import { newSlot, RecordTable } from '../src/record-table.js';
import {
  checkTable,
  guardLoops,
  remnantAt,
  remnantsOf,
  slotAt,
  slotsOf,
} from './table-invariants.js';

const numRuns = Number(process.env.IDEM_PROPERTY_RUNS) || 100;

// Keys of different lengths (one beyond Latin-1), so that records cost different amounts.
const KEYS = ['a', 'key-b', 'c'.repeat(40), 'd\u20ac', 'e'.repeat(300), 'f'];

type Status = HeldRecord['status'];
/** A record's deadlines relative to the clock, and its outcome's length when completed. */
interface Shape {
  status: Status;
  lease: number;
  expires: number;
  outcome: number;
}
type Op =
  | { op: 'advance'; ms: number }
  | { op: 'live'; key: number }
  | { op: 'insert'; key: number; shape: Shape }
  | { op: 'replace'; key: number; shape: Shape }
  | { op: 'remove'; key: number }
  | { op: 'removeGone'; index: number }
  | {
      op: 'makeRoom';
      entries: number;
      bytes: number;
      keep: number | undefined;
      keepRemnant: number | undefined;
    }
  | { op: 'sweep' };

const key = fc.nat(KEYS.length - 1);
// Deadlines in the past, now, the near future, far away and unreachable (a sum of two huge
// durations is Infinity: the store accepts any finite duration).
const offset = fc.oneof(
  { arbitrary: fc.integer({ min: -30, max: 120 }), weight: 8 },
  { arbitrary: fc.constantFrom(0, 1e15, Number.POSITIVE_INFINITY), weight: 1 },
);
const shape: fc.Arbitrary<Shape> = fc.record({
  status: fc.constantFrom<Status>('in_progress', 'completed', 'released'),
  lease: offset,
  expires: offset,
  outcome: fc.oneof(fc.integer({ min: 0, max: 1_024 }), fc.integer({ min: 1_025, max: 9_000 })),
});
const opArb: fc.Arbitrary<Op> = fc.oneof(
  // The clock mostly moves forward, sometimes back (a stepped system clock).
  {
    arbitrary: fc.record({
      op: fc.constant('advance' as const),
      ms: fc.integer({ min: -10, max: 60 }),
    }),
    weight: 3,
  },
  { arbitrary: fc.record({ op: fc.constant('live' as const), key }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('insert' as const), key, shape }), weight: 4 },
  { arbitrary: fc.record({ op: fc.constant('replace' as const), key, shape }), weight: 4 },
  { arbitrary: fc.record({ op: fc.constant('remove' as const), key }), weight: 1 },
  {
    arbitrary: fc.record({ op: fc.constant('removeGone' as const), index: fc.nat(20) }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      op: fc.constant('makeRoom' as const),
      entries: fc.integer({ min: 0, max: 2 }),
      bytes: fc.integer({ min: 0, max: 12_000 }),
      keep: fc.option(key, { nil: undefined }),
      // The remnant an acquire's record replaces (the store passes it with no `keep`).
      keepRemnant: fc.option(key, { nil: undefined }),
    }),
    weight: 4,
  },
  { arbitrary: fc.record({ op: fc.constant('sweep' as const) }), weight: 1 },
);

function recordOf(shape: Shape, now: number, fence: number, owner: string): HeldRecord {
  const record: HeldRecord = {
    status: shape.status,
    fingerprint: 'fp',
    owner,
    fence,
    leaseUntil: now + shape.lease,
    expiresAt: now + shape.expires,
  };
  if (shape.status === 'completed') record.outcome = 'x'.repeat(shape.outcome);
  return record;
}

/** Whether the table may drop `slot` for room at `now` (expired, a tombstone, a passed lease). */
const droppable = (slot: Slot, now: number) =>
  now >= slot.record.expiresAt ||
  slot.record.status === 'released' ||
  (slot.record.status === 'in_progress' && now >= slot.record.leaseUntil);

let guard: ReturnType<typeof guardLoops>;
beforeAll(() => {
  guard = guardLoops();
});
afterAll(() => {
  guard.restore();
  console.log(`[record-table] most eviction-loop iterations in one call: ${guard.most()}`);
});

describe('RecordTable under random calls (model-based)', () => {
  it('keeps its queues, bytes and fence floor exact, and every eviction loop ends within the records it holds', () => {
    fc.assert(
      fc.property(
        fc.array(opArb, { minLength: 20, maxLength: 150, size: 'max' }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 3_000, max: 24_000 }),
        fc.boolean(),
        (ops, maxEntries, maxBytes, forgetOrigins) => {
          const table = new RecordTable(maxEntries, maxBytes, forgetOrigins);
          let now = 1_000_000;
          let owners = 0;
          const gone: Slot[] = [];
          const forget = (slots: Iterable<Slot>) => {
            for (const slot of slots) if (slotAt(table, slot.key) !== slot) gone.push(slot);
          };
          for (const step of ops) {
            const k = 'key' in step ? (KEYS[step.key] as string) : '';
            const before = slotsOf(table);
            const remnantsBefore = remnantsOf(table);
            if (step.op === 'advance') now += step.ms;
            else if (step.op === 'live') {
              const slot = table.live(k, now);
              const was = before.find((s) => s.key === k);
              if (was && now >= was.record.expiresAt) expect(slot).toBeUndefined();
              else expect(slot).toBe(was);
            } else if (step.op === 'insert') {
              // A record is inserted only at a key that has none (as the store does).
              if (slotAt(table, k) === undefined) {
                const fence = table.fenceFloor + 1;
                table.insert(newSlot(k, recordOf(step.shape, now, fence, `o${++owners}`)));
                // The record takes the place of the key's remnant.
                expect(remnantAt(table, k)).toBeUndefined();
              }
            } else if (step.op === 'replace') {
              // Same key, fingerprint, owner and fence; any status, any deadlines.
              const slot = slotAt(table, k);
              if (slot) {
                const { fence, owner } = slot.record;
                table.replace(slot, recordOf(step.shape, now, fence, owner));
              }
            } else if (step.op === 'remove') {
              const slot = slotAt(table, k);
              if (slot) table.remove(slot);
            } else if (step.op === 'removeGone') {
              // Removing a slot that is no longer the table's changes nothing.
              const stale = gone[step.index % Math.max(1, gone.length)];
              if (stale) {
                const bytes = table.bytes;
                const size = table.size;
                table.remove(stale);
                expect([table.bytes, table.size]).toEqual([bytes, size]);
              }
            } else if (step.op === 'makeRoom') {
              // `keep` is a record live at `now`, as the store always passes one.
              const candidate =
                step.keep === undefined ? undefined : slotAt(table, KEYS[step.keep] as string);
              const keep = candidate && now < candidate.record.expiresAt ? candidate : undefined;
              const remnantCandidate =
                keep !== undefined || step.keepRemnant === undefined
                  ? undefined
                  : remnantAt(table, KEYS[step.keepRemnant] as string);
              const keepRemnant =
                remnantCandidate && now < remnantCandidate.expiresAt ? remnantCandidate : undefined;
              const made = table.makeRoom(now, step.entries, step.bytes, keep, keepRemnant);
              if (keepRemnant)
                expect(remnantAt(table, keepRemnant.key), 'makeRoom forgot the kept remnant').toBe(
                  keepRemnant,
                );
              const after = new Set(slotsOf(table));
              for (const slot of before) {
                if (after.has(slot)) continue;
                expect(slot, 'makeRoom evicted the record it keeps').not.toBe(keep);
                expect(droppable(slot, now), `makeRoom evicted live ${slot.key}`).toBe(true);
              }
              if (keep) expect(after.has(keep)).toBe(true);
              // A live record evicted leaves its origin in a remnant (unless forgotten in
              // turn, which only forgetOrigins allows); a live remnant is never dropped but
              // with forgetOrigins, or for the record that took its key.
              for (const slot of before) {
                if (after.has(slot) || now >= slot.record.expiresAt) continue;
                const remnant = remnantAt(table, slot.key);
                if (!forgetOrigins || remnant) {
                  expect(remnant?.origin, `no remnant for ${slot.key}`).toBe(slot.origin);
                  expect(remnant?.takeover).toBe(slot.record.status === 'in_progress');
                  expect(remnant?.expiresAt).toBe(slot.record.expiresAt);
                }
              }
              // Without forgetOrigins, and with it for a call refused in the end, no live
              // remnant is dropped.
              if (!forgetOrigins || !made)
                for (const remnant of remnantsBefore)
                  if (now < remnant.expiresAt)
                    expect(remnantAt(table, remnant.key), `dropped remnant ${remnant.key}`).toBe(
                      remnant,
                    );
              if (made) expect(table.fits(step.entries, step.bytes)).toBe(true);
              else {
                const tooBig =
                  step.entries + (keep ? 1 : 0) > maxEntries ||
                  step.bytes + (keep?.cost ?? 0) + (keepRemnant?.cost ?? 0) > maxBytes;
                // Refused: too big even alone, or nothing droppable is left but `keep` and the
                // passed leases, every one of which is put back as it was (its owner may be
                // late only, and still renew or complete).
                const passedLease = (slot: Slot) =>
                  slot.record.status === 'in_progress' &&
                  now >= slot.record.leaseUntil &&
                  now < slot.record.expiresAt;
                // Refused with forgetOrigins where entries were not short: forgetting every
                // remnant (but the kept one), those the passed leases (put back) would have
                // left included, would not have made room either.
                const passed = slotsOf(table).filter((slot) => slot !== keep && passedLease(slot));
                if (
                  !tooBig &&
                  forgetOrigins &&
                  slotsOf(table).length - passed.length + step.entries <= maxEntries
                ) {
                  let forgettable = 0;
                  for (const remnant of remnantsOf(table))
                    if (remnant !== keepRemnant) forgettable += remnant.cost;
                  for (const slot of passed) forgettable += slot.cost;
                  expect(
                    table.bytes - forgettable + step.bytes,
                    'refused though forgetting the remnants made room',
                  ).toBeGreaterThan(maxBytes);
                }
                if (!tooBig)
                  for (const slot of after)
                    if (slot !== keep && !passedLease(slot))
                      expect(droppable(slot, now), `refused while ${slot.key} was droppable`).toBe(
                        false,
                      );
                for (const slot of before)
                  if (passedLease(slot))
                    expect(after.has(slot), `a refusal evicted the passed lease ${slot.key}`).toBe(
                      true,
                    );
              }
            } else {
              table.sweep(now);
              for (const slot of slotsOf(table)) expect(now < slot.record.expiresAt).toBe(true);
            }
            forget(before);
            checkTable(table, gone);
          }
        },
      ),
      { numRuns },
    );
  });
});
