import { type Clock, OutcomeTooLargeError, StoreFullError } from '@idem/core';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createMemoryStore } from '../src/index.js';
import { RecordTable } from '../src/record-table.js';
import { checkTable, guardLoops } from './table-invariants.js';

const numRuns = Number(process.env.IDEM_PROPERTY_RUNS) || 100;
const KEYS = ['k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7', 'k8'];

/** What an HTTP layer does with a key: one call, or several at once (concurrent requests). */
type Call =
  | { op: 'acquire'; key: number; redeliver: boolean; lease: number; retention: number }
  | { op: 'extend'; key: number; lease: number }
  | { op: 'complete'; key: number; size: number; retention: number }
  | { op: 'release'; key: number }
  | { op: 'get'; key: number };
type Step = { op: 'calls'; calls: Call[] } | { op: 'clock'; ms: number } | { op: 'sweep' };

const key = fc.nat(KEYS.length - 1);
// Any finite duration is accepted; two huge ones add up to an Infinity deadline.
const duration = (max: number) =>
  fc.oneof(
    { arbitrary: fc.integer({ min: 0, max }), weight: 12 },
    { arbitrary: fc.constant(Number.MAX_VALUE), weight: 1 },
  );
const call: fc.Arbitrary<Call> = fc.oneof(
  fc.record({
    op: fc.constant('acquire' as const),
    key,
    redeliver: fc.boolean(),
    lease: duration(60),
    retention: duration(300),
  }),
  fc.record({ op: fc.constant('extend' as const), key, lease: duration(60) }),
  fc.record({
    op: fc.constant('complete' as const),
    key,
    size: fc.oneof(fc.integer({ min: 0, max: 1_024 }), fc.integer({ min: 1_025, max: 12_000 })),
    retention: duration(300),
  }),
  fc.record({ op: fc.constant('release' as const), key }),
  fc.record({ op: fc.constant('get' as const), key }),
);
const step: fc.Arbitrary<Step> = fc.oneof(
  {
    arbitrary: fc.record({
      op: fc.constant('calls' as const),
      calls: fc.array(call, { minLength: 1, maxLength: 4 }),
    }),
    weight: 6,
  },
  // Mostly forward, sometimes back: a system clock can be stepped.
  {
    arbitrary: fc.record({
      op: fc.constant('clock' as const),
      ms: fc.integer({ min: -20, max: 80 }),
    }),
    weight: 2,
  },
  { arbitrary: fc.record({ op: fc.constant('sweep' as const) }), weight: 1 },
);

let guard: ReturnType<typeof guardLoops>;
beforeAll(() => {
  guard = guardLoops();
});
afterAll(() => {
  guard.restore();
  vi.restoreAllMocks();
  console.log(`[bounded-calls] most eviction-loop iterations in one call: ${guard.most()}`);
});

/**
 * Every call of a store at its limits returns, each eviction loop within the records it
 * holds (an endless loop fails with UnboundedLoopError instead of hanging), and leaves the
 * table's queues and accounting exact. Calls come as an HTTP layer makes them: acquire,
 * heartbeats, complete with outcomes of any size, release, several keys at once.
 */
describe('every call of a full memory store returns in bounded time', () => {
  it('keeps the table exact and every eviction loop bounded under random calls', async () => {
    const live = vi.spyOn(RecordTable.prototype, 'live');
    await fc.assert(
      fc.asyncProperty(
        fc.array(step, { minLength: 10, maxLength: 80, size: 'max' }),
        fc.integer({ min: 1, max: 10 }),
        fc.integer({ min: 3_328, max: 40_000 }),
        async (steps, maxEntries, maxBytes) => {
          let time = Date.UTC(2026, 0, 1);
          const clock: Clock = { now: () => time };
          const store = createMemoryStore({ clock, maxEntries, maxBytes, sweepIntervalMs: 0 });
          live.mockClear();
          let owners = 0;
          const ownerOf = new Map<string, string>();
          const run = async (c: Call): Promise<void> => {
            const k = KEYS[c.key] as string;
            const owner = ownerOf.get(k) ?? 'nobody';
            try {
              if (c.op === 'acquire') {
                const who = c.redeliver && ownerOf.has(k) ? owner : `o${++owners}`;
                const input = { key: k, owner: who, fingerprint: 'fp', leaseMs: c.lease };
                const result = await store.acquire({ ...input, retentionMs: c.retention });
                if (result.kind === 'acquired') ownerOf.set(k, who);
              } else if (c.op === 'extend') {
                await store.extend({ key: k, owner, leaseMs: c.lease, retentionMs: 300 });
              } else if (c.op === 'complete') {
                const outcome = new Uint8Array(c.size).fill(7);
                await store.complete({ key: k, owner, outcome, retentionMs: c.retention });
              } else if (c.op === 'release') {
                await store.release({ key: k, owner, retentionMs: 100 });
              } else await store.get(k);
            } catch (error) {
              // A full store and an oversize outcome are answers; anything else fails.
              if (!(error instanceof StoreFullError || error instanceof OutcomeTooLargeError))
                throw error;
            }
          };
          for (const s of steps) {
            if (s.op === 'clock') time += s.ms;
            else if (s.op === 'sweep') store.sweep();
            else await Promise.all(s.calls.map(run));
            expect(store.size).toBeLessThanOrEqual(maxEntries);
            expect(store.bytes).toBeLessThanOrEqual(maxBytes);
            const table = live.mock.contexts.at(-1) as RecordTable | undefined;
            if (table) checkTable(table);
          }
        },
      ),
      { numRuns },
    );
  });
});
