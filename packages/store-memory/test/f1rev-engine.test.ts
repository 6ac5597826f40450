/**
 * f1rev: one originId per logical request through core's engine while the memory store
 * evicts. Two ways:
 *
 * - originrev's engine scenarios (failures, crashes, stalls past the lease, lost and
 *   redelivered store calls, any order) on a small store that other traffic keeps full:
 *   before every acquire a request on a filler key fails, so the scenario's tombstones and
 *   passed leases are evicted between its attempts;
 * - `execute` on the store itself (the engine's Latin-1 acquire form, its view form under
 *   another serializer), a manual clock that lands on lease deadlines exactly, crashed
 *   first attempts taken over, and filler failures: every execution of one key sees one
 *   originId, the effect named by it happens once, and a completed key replays.
 */
import {
  type AcquireInput,
  createIdempotency,
  deriveStorageKey,
  type IdempotencyStore,
  isIdemError,
  ManualClock,
  StoreFullError,
} from '@idem/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkOriginEngine } from '../../store-conformance/test/originrev-engine.js';
import { createMemoryStore, type MemoryStore } from '../src/index.js';
import { checkTable, probeTable, remnantAt } from './table-invariants.js';

const LEASE = 1_000;
const RETENTION = 3_600_000;

/** A request on one of `fillers` keys that fails (acquired, released), refused or not. */
function filler(store: MemoryStore, fillers: number) {
  let n = 0;
  return async () => {
    const key = `filler-${n % fillers}`;
    const owner = `filler-owner-${++n}`;
    const input = { key, owner, fingerprint: 'f', leaseMs: LEASE, retentionMs: RETENTION };
    try {
      const result = await store.acquire(input);
      if (result.kind === 'acquired') await store.release({ key, owner, retentionMs: RETENTION });
    } catch (error) {
      if (!(error instanceof StoreFullError)) throw error;
    }
  };
}

/**
 * `store`, with a failing filler request before every acquire (the plain form only);
 * `carried` counts the acquisitions that took a key from its remnant.
 */
function noisy(store: MemoryStore, fillers: number, carried: () => void): IdempotencyStore {
  const noise = filler(store, fillers);
  const table = probeTable(store);
  return {
    capabilities: store.capabilities,
    acquire: async (input: AcquireInput) => {
      await noise();
      const remnant = remnantAt(table, input.key);
      const result = await store.acquire(input);
      if (remnant && result.kind === 'acquired' && result.origin === remnant.origin) carried();
      return result;
    },
    complete: (input) => store.complete(input),
    release: (input) => store.release(input),
    extend: (input) => store.extend(input),
    get: (key) => store.get(key),
  };
}

const runs = Number(process.env.IDEM_PROPERTY_RUNS) || 300;
/** Enough scenarios that the remnant bounds below hold by a wide margin (mean about 0.28 a scenario). */
const SCENARIOS = 300;

describe('f1rev: originId through the engine under eviction', () => {
  it(`originrev engine scenarios on a store kept full by failing filler requests (${SCENARIOS} scenarios)`, async () => {
    const tables: ReturnType<typeof probeTable>[] = [];
    let carried = 0;
    const tally = await checkOriginEngine(async () => {
      const clock = new ManualClock(1_000_000_000);
      const store = createMemoryStore({ clock, sweepIntervalMs: 0, maxEntries: 3 });
      tables.push(probeTable(store));
      return {
        store: noisy(store, 2, () => carried++),
        clock,
        advance: async (ms) => clock.advance(ms),
        leaseMs: LEASE,
        toleranceMs: 0,
      };
    }, SCENARIOS);
    for (const table of tables) checkTable(table);
    // The scenarios' retries did take their keys from remnants. About one scenario in nine
    // carries a key (27-40 of 120 in six runs); at 120 a bound of 20 failed once in CI.
    expect(carried).toBeGreaterThan(SCENARIOS / 10);
    expect(tally.takeoversSeen).toBeGreaterThan(SCENARIOS / 4);
  }, 60_000);

  it(`execute on the store itself: one originId per key, one effect, replays after (${runs} runs)`, async () => {
    type Step =
      | { kind: 'execute'; key: number; behave: 'ok' | 'fail' }
      | { kind: 'crash'; key: number }
      | { kind: 'filler' }
      | { kind: 'advance'; ms: number };
    const step: fc.Arbitrary<Step> = fc.oneof(
      {
        arbitrary: fc.record({
          kind: fc.constant('execute' as const),
          key: fc.nat(2),
          behave: fc.constantFrom('ok' as const, 'fail' as const, 'fail' as const),
        }),
        weight: 4,
      },
      { arbitrary: fc.record({ kind: fc.constant('crash' as const), key: fc.nat(2) }), weight: 1 },
      { arbitrary: fc.record({ kind: fc.constant('filler' as const) }), weight: 3 },
      {
        arbitrary: fc.record({
          kind: fc.constant('advance' as const),
          ms: fc.constantFrom(LEASE - 1, LEASE, LEASE + 1, 1, 0),
        }),
        weight: 2,
      },
    );
    let carried = 0;
    let crashed = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(step, { minLength: 5, maxLength: 40, size: 'max' }),
        fc.integer({ min: 3, max: 5 }),
        fc.boolean(),
        async (plan, maxEntries, json) => {
          const clock = new ManualClock(1_000_000_000);
          const store = createMemoryStore({ clock, sweepIntervalMs: 0, maxEntries });
          const table = probeTable(store);
          const idem = createIdempotency<string>({
            store,
            clock,
            leaseMs: LEASE,
            retentionMs: RETENTION,
            heartbeatMs: false,
            // JSON: the engine acquires through the store's Latin-1 form; another serializer
            // through its view form.
            ...(json
              ? {}
              : {
                  serializer: {
                    serialize: (value: string) => ({
                      meta: {},
                      body: new TextEncoder().encode(value),
                    }),
                    deserialize: (outcome: { body: Uint8Array }) =>
                      new TextDecoder().decode(outcome.body),
                  },
                }),
          });
          const noise = filler(store, 3);
          const origins = new Map<string, Set<string>>();
          const effects = new Map<string, number>();
          const done = new Map<string, string>();
          let n = 0;
          for (const s of plan) {
            if (s.kind === 'advance') clock.advance(s.ms);
            else if (s.kind === 'filler') await noise();
            else if (s.kind === 'crash') {
              // A first attempt that crashes (never completes): its lease passes, and the next
              // execute takes over (or the store evicts it first).
              const key = `key-${s.key}`;
              const owner = `crasher-${++n}`;
              const result = await store
                .acquire({
                  key: deriveStorageKey(null, key),
                  owner,
                  fingerprint: '',
                  leaseMs: LEASE,
                  retentionMs: RETENTION,
                })
                .catch(() => undefined);
              if (result?.kind === 'acquired') crashed++;
            } else {
              const key = `key-${s.key}`;
              const remnant = remnantAt(table, deriveStorageKey(null, key));
              let ran = false;
              const run = await idem
                .execute({ key }, async (ctx) => {
                  ran = true;
                  if (remnant) carried++;
                  const seen = origins.get(key) ?? new Set<string>();
                  seen.add(ctx.originId);
                  origins.set(key, seen);
                  if (s.behave === 'fail') throw new Error('fails');
                  // The effect, named by the logical request.
                  effects.set(ctx.originId, (effects.get(ctx.originId) ?? 0) + 1);
                  return ctx.originId;
                })
                .catch((error: unknown) => {
                  if (error instanceof Error && error.message === 'fails') return undefined;
                  if (isIdemError(error)) return undefined; // in progress, store full, ...
                  throw error;
                });
              if (run !== undefined) {
                if (done.has(key)) {
                  expect(ran, `${key} ran again after it completed`).toBe(false);
                  expect(run.value).toBe(done.get(key));
                } else if (ran) done.set(key, run.value);
              }
            }
            checkTable(table);
          }
          for (const [key, seen] of origins) {
            expect(seen.size, `${key}: originIds ${[...seen]}`).toBe(1);
          }
          for (const [originId, count] of effects) expect(count, `effect ${originId}`).toBe(1);
          await idem.drain(1_000);
        },
      ),
      { numRuns: runs },
    );
    // Executions that took their key from a remnant, and crashed first attempts (about 0.7
    // of each a run; Node 24's pass runs 25).
    expect(carried).toBeGreaterThan(runs / 10);
    expect(crashed).toBeGreaterThan(runs / 10);
  }, 60_000);
});
