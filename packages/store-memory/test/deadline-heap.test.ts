import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DeadlineHeap } from '../src/deadline-heap.js';
import { newSlot, RecordTable } from '../src/record-table.js';

const numRuns = Number(process.env.IDEM_PROPERTY_RUNS) || 100;

interface Item {
  id: number;
  at: number;
}

type Op =
  | { op: 'set'; id: number; deadline: number }
  | { op: 'delete'; id: number }
  | { op: 'peekExcept'; id: number };

const ITEMS = 40;
const id = fc.nat(ITEMS - 1);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    arbitrary: fc.record({
      op: fc.constant('set' as const),
      id,
      deadline: fc.integer({ min: -5, max: 100 }),
    }),
    weight: 3,
  },
  { arbitrary: fc.record({ op: fc.constant('delete' as const), id }), weight: 2 },
  { arbitrary: fc.record({ op: fc.constant('peekExcept' as const), id }), weight: 1 },
);

describe('DeadlineHeap (positions kept in the items)', () => {
  it('always answers the earliest deadline and holds exactly the items in it', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 100, maxLength: 400 }), (ops) => {
        const items = Array.from({ length: ITEMS }, (_, i): Item => ({ id: i, at: -1 }));
        const heap = new DeadlineHeap<Item>(
          (item) => item.at,
          (item, at) => {
            item.at = at;
          },
        );
        const model = new Map<number, number>();
        const earliest = (except?: number) =>
          Math.min(...[...model].filter(([k]) => k !== except).map(([, d]) => d));
        for (const step of ops) {
          const item = items[step.id] as Item;
          if (step.op === 'set') {
            heap.set(item, step.deadline);
            model.set(step.id, step.deadline);
          } else if (step.op === 'delete') {
            heap.delete(item);
            model.delete(step.id);
            expect(item.at).toBe(-1);
          } else {
            const other = heap.peekExcept(item);
            if (other === undefined)
              expect([...model.keys()].filter((k) => k !== step.id)).toEqual([]);
            else expect(model.get(other.id)).toBe(earliest(step.id));
          }
          expect(heap.length).toBe(model.size);
          // One expect a step, not one an item: 40 expects a step made a run take tens of
          // seconds on a loaded machine, past the time limit.
          const misplaced = items.filter(
            (candidate) => heap.has(candidate) !== model.has(candidate.id),
          );
          expect(misplaced).toEqual([]);
          const first = heap.peek();
          if (first === undefined) expect(model.size).toBe(0);
          else expect(model.get(first.id)).toBe(earliest());
        }
        // Draining gives every deadline in order: no entry was left out of place.
        const drained: number[] = [];
        for (let item = heap.peek(); item !== undefined; item = heap.peek()) {
          drained.push(model.get(item.id) as number);
          heap.delete(item);
        }
        expect(drained).toEqual([...model.values()].sort((a, b) => a - b));
      }),
      { numRuns },
    );
  });
});

describe('RecordTable queues', () => {
  it('hold at most one entry per record and queue, whatever the churn', () => {
    const table = new RecordTable(50, 2 ** 40);
    let now = 0;
    for (let i = 0; i < 5_000; i++) {
      now += i % 7;
      const key = `k${i % 80}`;
      const found = table.live(key, now);
      if (found) {
        const { record } = found;
        if (i % 3 === 0)
          table.replace(found, { ...record, status: 'released', expiresAt: now + 500 });
        else if (i % 3 === 1)
          table.replace(found, { ...record, leaseUntil: now + (i % 11), expiresAt: now + 900 });
        else table.remove(found);
      } else if (table.makeRoom(now, 1, 1_000)) {
        const record = {
          status: 'in_progress' as const,
          fingerprint: 'fp',
          owner: `o${i}`,
          fence: table.fenceFloor + 1,
          leaseUntil: now + (i % 13),
          expiresAt: now + 1_000,
        };
        table.insert(newSlot(key, record));
      }
      // Two queues a record at most (expiry, and lease or release), one a remnant.
      expect(table.queued).toBeLessThanOrEqual(2 * table.size + table.remnantCount);
    }
  });
});
