import { ManualClock, StoreFullError } from '@idem/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

const numRuns = Number(process.env.IDEM_PROPERTY_RUNS) || 100;
const KEYS = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];

type Op =
  | { op: 'acquire'; key: number; lease: number; retention: number; redeliver: boolean }
  | { op: 'complete'; key: number; size: number; retention: number }
  | { op: 'release'; key: number }
  | { op: 'extend'; key: number; lease: number }
  | { op: 'advance'; ms: number }
  | { op: 'sweep' };

const key = fc.nat(KEYS.length - 1);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    op: fc.constant('acquire' as const),
    key,
    lease: fc.integer({ min: 1, max: 50 }),
    retention: fc.integer({ min: 0, max: 200 }),
    redeliver: fc.boolean(),
  }),
  fc.record({
    op: fc.constant('complete' as const),
    key,
    size: fc.oneof(fc.integer({ min: 0, max: 1024 }), fc.integer({ min: 1025, max: 6000 })),
    retention: fc.integer({ min: 0, max: 200 }),
  }),
  fc.record({ op: fc.constant('release' as const), key }),
  fc.record({ op: fc.constant('extend' as const), key, lease: fc.integer({ min: 1, max: 50 }) }),
  fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 60 }) }),
  fc.record({ op: fc.constant('sweep' as const) }),
);

/**
 * Random calls against a small store: whatever happens, a completed record within its
 * retention and a live lease are still there, the limits hold, and STORE_FULL comes only
 * when nothing droppable is left, or (once an outcome above the in-progress marker's size
 * was given to `complete`) when the room kept for the outcomes of the records in progress
 * explains it (see the README's "Memory bound and sizing"): then the droppable records the
 * refused call could have evicted are all still there, as they were.
 */
describe('eviction invariants under random calls', () => {
  it('never loses a live record and refuses only when everything left is live', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { minLength: 1, maxLength: 80 }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 8_000, max: 20_000 }),
        async (ops, maxEntries, maxBytes) => {
          const clock = new ManualClock();
          const store = createMemoryStore({ clock, maxEntries, maxBytes, sweepIntervalMs: 0 });
          let n = 0;
          const owners = new Map<string, string>(); // the latest owner we acquired per key
          // An outcome above the in-progress marker was offered: acquires keep room for one
          // such outcome per record in progress (OutcomeHeadroom) and may be refused for it.
          let headroom = false;
          // What the store promised: outcomes within retention, leases not yet ended.
          const outcomes = new Map<string, { until: number; bytes: number[] }>();
          const leases = new Map<
            string,
            { owner: string; until: number; fence: number; expires: number }
          >();
          for (const step of ops) {
            const k = 'key' in step ? (KEYS[step.key] as string) : '';
            const now = clock.now();
            if (step.op === 'advance') clock.advance(step.ms);
            else if (step.op === 'sweep') store.sweep();
            else if (step.op === 'acquire') {
              const mine = owners.get(k);
              const owner = step.redeliver && mine ? mine : `o${++n}`;
              const input = { key: k, owner, fingerprint: 'fp', leaseMs: step.lease };
              const before = new Map<string, unknown>();
              for (const other of KEYS) before.set(other, await store.get(other));
              const result = await store
                .acquire({ ...input, retentionMs: step.retention })
                .catch((e: Error) => e);
              if (result instanceof StoreFullError) {
                for (const other of KEYS) {
                  const record = await store.get(other);
                  if (!record) continue;
                  const live =
                    record.status === 'completed' ||
                    (record.status === 'in_progress' && now < record.leaseUntil);
                  if (headroom)
                    expect(record, `${other} changed by a refused acquire`).toEqual(
                      before.get(other),
                    );
                  else expect(live, `STORE_FULL while ${other} was droppable`).toBe(true);
                }
              } else if (result instanceof Error) {
                throw result;
              } else if (result.kind === 'acquired') {
                const held = leases.get(k);
                // A redelivered acquire keeps its fence while its lease is live; past the
                // lease the record may have been evicted for room, and the fence then grows.
                if (held?.owner === owner && now < held.until)
                  expect(result.fence).toBe(held.fence);
                if (held && now < held.expires)
                  expect(result.fence).toBeGreaterThanOrEqual(held.fence);
                owners.set(k, owner);
                const { leaseUntil: until, fence } = result;
                leases.set(k, { owner, until, fence, expires: until + step.retention });
              }
            } else {
              const owner = owners.get(k) ?? 'nobody';
              if (step.op === 'complete') {
                if (step.size > 1024) headroom = true;
                const bytes = Array.from({ length: step.size }, (_, i) => i & 0xff);
                const outcome = new Uint8Array(bytes);
                const input = { key: k, owner, outcome, retentionMs: step.retention };
                const result = await store.complete(input).catch((e: Error) => e);
                if (step.size <= 1024) expect(result).not.toBeInstanceOf(StoreFullError);
                if (!(result instanceof Error) && result.ok && leases.get(k)?.owner === owner) {
                  leases.delete(k);
                  outcomes.set(k, { until: now + step.retention, bytes });
                }
              } else if (step.op === 'release') {
                const result = await store.release({ key: k, owner, retentionMs: 100 });
                if (result.ok) leases.delete(k);
              } else {
                const result = await store.extend({
                  key: k,
                  owner,
                  leaseMs: step.lease,
                  retentionMs: 100,
                });
                const held = leases.get(k);
                if (result.ok && held) {
                  held.until = result.leaseUntil ?? held.until;
                  held.expires = held.until + 100;
                }
              }
            }
            expect(store.size).toBeLessThanOrEqual(maxEntries);
            expect(store.bytes).toBeLessThanOrEqual(maxBytes);
            const at = clock.now();
            for (const [k2, promised] of outcomes) {
              if (at >= promised.until) continue;
              const record = await store.get(k2);
              expect(record?.status, `completed ${k2} lost within retention`).toBe('completed');
              expect([...(record?.outcome ?? [])]).toEqual(promised.bytes);
            }
            for (const [k2, lease] of leases) {
              if (at >= lease.until) continue;
              const record = await store.get(k2);
              expect(record, `live lease on ${k2} lost`).toMatchObject({
                status: 'in_progress',
                owner: lease.owner,
              });
            }
          }
        },
      ),
      { numRuns },
    );
  });
});
