// Broken variants of the memory store for the conformance-suite review (confrev): each one
// wraps a real `createMemoryStore` and breaks ONE guarantee of the store contract.
import type {
  AcquireInput,
  AcquireResult,
  Clock,
  CompleteInput,
  DeleteExpectation,
  DeleteResult,
  ExtendInput,
  IdempotencyStore,
  RecordInspection,
  ReleaseInput,
  StoreAdmin,
  StoredRecord,
} from '@idem/core';
import fc from 'fast-check';
import { createMemoryStore } from '../../store-memory/src/index.js';
import { runCheck } from '../src/describe.js';
import { type ConformanceOptions, contractChecks, exactlyOnceProperty } from '../src/index.js';

type Inner = ReturnType<typeof createMemoryStore>;

/** What a variant may override; `inner` is the real memory store, `state` per store. */
export interface VariantCtx {
  inner: Inner;
  clock: Clock;
  /** Fence shown = stored fence - offset (per key). */
  fenceOffset: Map<string, number>;
  /** Free per-variant state. */
  state: Map<string, unknown>;
}

export type Overrides = Partial<{
  acquire(input: AcquireInput, c: VariantCtx): Promise<AcquireResult>;
  complete(input: CompleteInput, c: VariantCtx): Promise<Awaited<ReturnType<Inner['complete']>>>;
  release(input: ReleaseInput, c: VariantCtx): Promise<Awaited<ReturnType<Inner['release']>>>;
  extend(input: ExtendInput, c: VariantCtx): Promise<Awaited<ReturnType<Inner['extend']>>>;
  get(key: string, c: VariantCtx): Promise<StoredRecord | undefined>;
  delete(
    key: string,
    expected: DeleteExpectation | undefined,
    c: VariantCtx,
  ): Promise<DeleteResult>;
  maxOutcomeBytes: number | undefined;
  declaredMaxOutcomeBytes: number | undefined;
  /** Rewrites every record read back (get, found, inspect's fields). */
  view(key: string, r: StoredRecord, c: VariantCtx): StoredRecord | undefined;
  /** The clock the inner store decides expiry by (default: the suite's). */
  innerClock(clock: Clock): Clock;
  /** Maps every storage key before the inner store sees it (admin included). */
  innerKey(key: string): string;
  /** Rewrites the store's clock reading a `found` answer or `inspect` shows. */
  now(storeNow: number, c: VariantCtx): number;
}>;

const shown = (c: VariantCtx, key: string, fence: number) => fence - (c.fenceOffset.get(key) ?? 0);

function mapRecord(v: Overrides, c: VariantCtx, key: string, r: StoredRecord | undefined) {
  const seen = r && v.view ? v.view(key, r, c) : r;
  return seen && { ...seen, fence: shown(c, key, seen.fence) };
}

/** An expectation's fence is a shown one: the inner store holds it plus the key's offset. */
function held<E extends { fence?: number }>(c: VariantCtx, key: string, expected: E | undefined) {
  return expected?.fence === undefined
    ? expected
    : { ...expected, fence: expected.fence + (c.fenceOffset.get(key) ?? 0) };
}

/** The memory store with every storage key mapped by `map` (the admin's too). */
function keysMappedBy(store: Inner, map: (key: string) => string): Inner {
  const admin = store.admin as StoreAdmin;
  return {
    ...store,
    acquire: (i) => store.acquire({ ...i, key: map(i.key) }),
    complete: (i) => store.complete({ ...i, key: map(i.key) }),
    release: (i) => store.release({ ...i, key: map(i.key) }),
    extend: (i) => store.extend({ ...i, key: map(i.key) }),
    get: (key) => store.get(map(key)),
    admin: {
      inspect: (key) => admin.inspect(map(key)),
      forceRelease: (key, expected) => admin.forceRelease(map(key), expected),
      delete: (key, expected) => admin.delete(map(key), expected),
    },
  };
}

/** Builds the wrapped store for one test. */
export function createVariantStore(v: Overrides, clock: Clock): IdempotencyStore {
  const innerClock = v.innerClock ? v.innerClock(clock) : clock;
  const unmapped = createMemoryStore({
    clock: innerClock,
    sweepIntervalMs: 0,
    ...(v.maxOutcomeBytes !== undefined ? { maxOutcomeBytes: v.maxOutcomeBytes } : {}),
  });
  const inner = v.innerKey ? keysMappedBy(unmapped, v.innerKey) : unmapped;
  const c: VariantCtx = { inner, clock, fenceOffset: new Map(), state: new Map() };
  const acquire = v.acquire ?? ((i: AcquireInput) => inner.acquire(i));
  const get = v.get ?? ((k: string) => inner.get(k));
  const innerAdmin = inner.admin as StoreAdmin;
  const admin: StoreAdmin = {
    async inspect(key) {
      const r = await innerAdmin.inspect(key);
      if (!r) return r;
      if (v.now) r.now = v.now(r.now, c);
      if (!v.view) return { ...r, fence: shown(c, key, r.fence) };
      const seen = v.view(key, { ...r, outcome: new Uint8Array(r.outcomeBytes) }, c);
      if (!seen) return undefined;
      const { outcome: _, ...fields } = seen;
      return { ...r, ...fields, fence: shown(c, key, seen.fence) } as RecordInspection;
    },
    async forceRelease(key, expected) {
      const r = await innerAdmin.forceRelease(key, held(c, key, expected));
      return r.ok || r.reason === 'changed' ? { ...r, fence: shown(c, key, r.fence) } : r;
    },
    async delete(key, expected) {
      const inner = held(c, key, expected);
      const r = await (v.delete ? v.delete(key, inner, c) : innerAdmin.delete(key, inner));
      return r.reason === 'changed' ? { ...r, fence: shown(c, key, r.fence) } : r;
    },
  };
  const capabilities = {
    ...inner.capabilities,
    ...('declaredMaxOutcomeBytes' in v ? { maxOutcomeBytes: v.declaredMaxOutcomeBytes } : {}),
  };
  if (capabilities.maxOutcomeBytes === undefined) delete capabilities.maxOutcomeBytes;
  return {
    capabilities,
    async acquire(input) {
      const r = await acquire(input, c);
      return r.kind === 'acquired'
        ? { ...r, fence: shown(c, input.key, r.fence) }
        : {
            ...r,
            record: mapRecord(v, c, input.key, r.record) as StoredRecord,
            ...(v.now ? { now: v.now(r.now, c) } : {}),
          };
    },
    complete: (i) => (v.complete ? v.complete(i, c) : inner.complete(i)),
    release: (i) => (v.release ? v.release(i, c) : inner.release(i)),
    extend: (i) => (v.extend ? v.extend(i, c) : inner.extend(i)),
    async get(key) {
      return mapRecord(v, c, key, await get(key, c));
    },
    admin,
    close: () => inner.close?.() ?? Promise.resolve(),
  };
}

export const optionsFor = (v: Overrides): ConformanceOptions => ({
  clock: 'injectable',
  createStore: ({ clock }) => createVariantStore(v, clock),
  destroyStore: (store) => store.close?.(),
});

const withTimeout = <T>(p: Promise<T>, ms: number, what: string) =>
  Promise.race([
    p,
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms).unref(),
    ),
  ]);

/** Every example check that fails against the store the options make, as `group: name`. */
export async function failingChecks(v: Overrides | ConformanceOptions): Promise<string[]> {
  const options = 'createStore' in v ? v : optionsFor(v);
  const failed: string[] = [];
  for (const check of contractChecks) {
    try {
      await withTimeout(runCheck(options, check.run), 15_000, check.name);
    } catch {
      failed.push(`${check.group}: ${check.name}`);
    }
  }
  return failed;
}

/** The property's report when it fails against the variant within `numRuns`, else undefined. */
export async function propertyFailure(
  v: Overrides | ConformanceOptions,
  numRuns: number,
): Promise<string | undefined> {
  const options = 'createStore' in v ? v : optionsFor(v);
  const details = await fc.check(exactlyOnceProperty(options), { numRuns, seed: 4242 });
  return details.failed
    ? (fc.defaultReportMessage(details) ?? 'property failed').slice(0, 600)
    : undefined;
}

/**
 * What the whole suite (checks, then the property) says about a variant, or about the store
 * that options of a test's own make.
 */
export async function suiteVerdict(
  v: Overrides | ConformanceOptions,
  numRuns = 150,
): Promise<{ checks: string[]; property: string | undefined }> {
  const checks = await failingChecks(v);
  const property = checks.length > 0 ? undefined : await propertyFailure(v, numRuns);
  return { checks, property };
}
