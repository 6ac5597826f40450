import {
  type AcquireInput,
  type AcquireResult,
  answersSynchronously,
  type CompleteInput,
  createIdempotency,
  type ExtendInput,
  type IdempotencyStore,
  InvalidInputError,
  InvalidKeyError,
  type OwnerWriteResult,
  type ReleaseInput,
  type StoredRecord,
  StoreFullError,
  StoreUnavailableError,
  syncFormOf,
} from '@idem/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';
import {
  MARKER_OUTCOME_BYTES,
  OUTCOME_OVERHEAD_BYTES,
  RECORD_OVERHEAD_BYTES,
  stringBytes,
} from '../src/record-table.js';

/** A settable clock. */
function manualClock(start = 1_000_000) {
  let now = start;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}

/** The accounted cost of a record as the store's documented formula gives it. */
function costOf(key: string, record: StoredRecord): number {
  let payload = 0;
  if (record.status === 'completed')
    payload = OUTCOME_OVERHEAD_BYTES + (record.outcome?.length ?? 0);
  else if (record.status === 'in_progress') payload = OUTCOME_OVERHEAD_BYTES + MARKER_OUTCOME_BYTES;
  return (
    RECORD_OVERHEAD_BYTES +
    stringBytes(key) +
    stringBytes(record.fingerprint) +
    stringBytes(record.owner) +
    // A carried origin (another owner's token) is a string of its own.
    (record.origin === undefined || record.origin === record.owner
      ? 0
      : stringBytes(record.origin)) +
    payload
  );
}

/** The store's methods called through their synchronous forms. */
function syncOf(store: IdempotencyStore) {
  const acquire = syncFormOf(store.acquire) as (input: AcquireInput) => AcquireResult;
  const complete = syncFormOf(store.complete) as (input: CompleteInput) => OwnerWriteResult;
  const release = syncFormOf(store.release) as (input: ReleaseInput) => OwnerWriteResult;
  const extend = syncFormOf(store.extend) as (input: ExtendInput) => OwnerWriteResult;
  expect([acquire, complete, release, extend].every((f) => typeof f === 'function')).toBe(true);
  return { acquire, complete, release, extend };
}

const bytesOf = (length: number, seed: number) => {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (seed + i * 31) & 0xff;
  return bytes;
};

type Op =
  | { op: 'acquire'; key: number; owner: number; fp: number; leaseMs: number; retentionMs: number }
  | { op: 'complete'; key: number; owner: number; size: number; retentionMs: number; seed: number }
  | { op: 'release'; key: number; owner: number; retentionMs: number }
  | { op: 'extend'; key: number; owner: number; leaseMs: number; retentionMs: number }
  | { op: 'advance'; ms: number }
  | { op: 'forceRelease'; key: number }
  | { op: 'delete'; key: number }
  | { op: 'sweep' };

const KEYS = ['k0', 'k1', 'k\u00e9', 'k\u4e00'];
const OWNERS = ['o0', 'o1', 'o2\u00ff', 'o3'];
const FPS = ['', 'fp', 'fp\u4e00'];

// Leases and retentions of at least 1 ms, as the engine sends (a record written with 0 expires
// the moment it is written, so reading it back at once finds nothing, as it should).
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    op: fc.constant('acquire' as const),
    key: fc.nat(3),
    owner: fc.nat(3),
    fp: fc.nat(2),
    leaseMs: fc.integer({ min: 1, max: 100 }),
    retentionMs: fc.integer({ min: 1, max: 200 }),
  }),
  fc.record({
    op: fc.constant('complete' as const),
    key: fc.nat(3),
    owner: fc.nat(3),
    size: fc.oneof(fc.nat(64), fc.nat(9_000)),
    retentionMs: fc.integer({ min: 1, max: 200 }),
    seed: fc.nat(255),
  }),
  fc.record({
    op: fc.constant('release' as const),
    key: fc.nat(3),
    owner: fc.nat(3),
    retentionMs: fc.integer({ min: 1, max: 200 }),
  }),
  fc.record({
    op: fc.constant('extend' as const),
    key: fc.nat(3),
    owner: fc.nat(3),
    leaseMs: fc.integer({ min: 1, max: 100 }),
    retentionMs: fc.integer({ min: 1, max: 200 }),
  }),
  fc.record({ op: fc.constant('advance' as const), ms: fc.nat(150) }),
  fc.record({ op: fc.constant('forceRelease' as const), key: fc.nat(3) }),
  fc.record({ op: fc.constant('delete' as const), key: fc.nat(3) }),
  fc.record({ op: fc.constant('sweep' as const) }),
);

describe('memory7 review: store-memory accounting under in-place updates', () => {
  it('bytes always equal the sum of the live records’ costs, never negative, never above maxBytes, and return to 0', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 80 }), async (ops) => {
        const clock = manualClock();
        const maxBytes = 24_000;
        const store = createMemoryStore({ clock, maxBytes, maxEntries: 3, sweepIntervalMs: 0 });
        const s = syncOf(store);
        // What each key's completed record must replay: the bytes of its last completion, by fence.
        const recorded = new Map<string, { fence: number; bytes: Uint8Array }>();
        const fences = new Map<string, number>();
        for (const o of ops) {
          try {
            switch (o.op) {
              case 'acquire': {
                const key = KEYS[o.key] as string;
                const input = {
                  key,
                  owner: OWNERS[o.owner] as string,
                  fingerprint: FPS[o.fp] as string,
                  leaseMs: o.leaseMs,
                  retentionMs: o.retentionMs,
                };
                const r = s.acquire(input);
                const got = await store.get(key);
                if (r.kind === 'acquired') {
                  // A new (or redelivered) acquisition: the record is the caller's, no outcome.
                  expect(got).toMatchObject({
                    status: 'in_progress',
                    owner: input.owner,
                    fence: r.fence,
                  });
                  expect(got?.outcome).toBeUndefined();
                  const before = fences.get(key) ?? 0;
                  expect(r.fence).toBeGreaterThanOrEqual(before);
                  fences.set(key, r.fence);
                } else {
                  const rec = r.record;
                  if (rec.status === 'completed') {
                    const want = recorded.get(key);
                    expect(want?.fence).toBe(rec.fence);
                    expect(
                      Buffer.from(rec.outcome as Uint8Array).equals(
                        Buffer.from(want?.bytes as Uint8Array),
                      ),
                    ).toBe(true);
                  } else expect(rec.outcome).toBeUndefined();
                }
                break;
              }
              case 'complete': {
                const key = KEYS[o.key] as string;
                const outcome = bytesOf(o.size, o.seed);
                const before = await store.get(key);
                const r = s.complete({
                  key,
                  owner: OWNERS[o.owner] as string,
                  outcome,
                  retentionMs: o.retentionMs,
                });
                if (r.ok && before?.status === 'in_progress') {
                  recorded.set(key, { fence: before.fence, bytes: outcome.slice() });
                }
                // The caller's bytes changed after the call: the store kept its own copy.
                outcome.fill(0xee);
                break;
              }
              case 'release':
                s.release({
                  key: KEYS[o.key] as string,
                  owner: OWNERS[o.owner] as string,
                  retentionMs: o.retentionMs,
                });
                break;
              case 'extend':
                s.extend({
                  key: KEYS[o.key] as string,
                  owner: OWNERS[o.owner] as string,
                  leaseMs: o.leaseMs,
                  retentionMs: o.retentionMs,
                });
                break;
              case 'advance':
                clock.advance(o.ms);
                break;
              case 'forceRelease':
                await store.admin.forceRelease(KEYS[o.key] as string);
                break;
              case 'delete':
                await store.admin.delete(KEYS[o.key] as string);
                break;
              case 'sweep':
                store.sweep();
                break;
            }
          } catch (error) {
            if (!(error instanceof StoreFullError)) throw error;
          }
          expect(store.bytes).toBeGreaterThanOrEqual(0);
          expect(store.bytes).toBeLessThanOrEqual(maxBytes);
          // Reading every key drops the expired ones: what is left is exactly what is accounted.
          let sum = 0;
          let count = 0;
          for (const key of KEYS) {
            const record = await store.get(key);
            if (record) {
              sum += costOf(key, record);
              count++;
              if (record.status === 'completed') {
                const want = recorded.get(key);
                expect(want?.fence).toBe(record.fence);
                expect(
                  Buffer.from(record.outcome as Uint8Array).equals(
                    Buffer.from(want?.bytes as Uint8Array),
                  ),
                ).toBe(true);
              } else expect(record.outcome).toBeUndefined();
            }
          }
          // Besides the records, the remnants of records evicted within their retention
          // (their cost is modelled exactly in f1rev-model.test.ts).
          expect(store.remnantBytes).toBeGreaterThanOrEqual(0);
          expect(store.bytes).toBe(sum + store.remnantBytes);
          expect(store.size).toBe(count);
        }
        clock.advance(10_000);
        store.sweep();
        expect(store.bytes).toBe(0);
        expect(store.remnantBytes).toBe(0);
        expect(store.size).toBe(0);
      }),
      { numRuns: 200 },
    );
  });
});

describe('memory7 review: store-memory isolation of in-place records', () => {
  it('a record found earlier is a copy: later writes to the slot do not change it', () => {
    const clock = manualClock();
    const store = createMemoryStore({ clock, sweepIntervalMs: 0 });
    const s = syncOf(store);
    s.acquire({ key: 'k', owner: 'a', fingerprint: 'f', leaseMs: 100, retentionMs: 1000 });
    const seen = s.acquire({
      key: 'k',
      owner: 'b',
      fingerprint: 'f',
      leaseMs: 100,
      retentionMs: 1000,
    });
    expect(seen.kind).toBe('found');
    const snapshot = JSON.stringify(seen);
    s.extend({ key: 'k', owner: 'a', leaseMs: 500, retentionMs: 1000 });
    s.complete({ key: 'k', owner: 'a', outcome: bytesOf(10, 1), retentionMs: 1000 });
    expect(JSON.stringify(seen)).toBe(snapshot);
  });

  it('after release or expiry, a new acquisition never shows the old outcome, fingerprint or owner', () => {
    const clock = manualClock();
    const store = createMemoryStore({ clock, sweepIntervalMs: 0 });
    const s = syncOf(store);
    // completed then expired
    s.acquire({ key: 'k', owner: 'a', fingerprint: 'f1', leaseMs: 100, retentionMs: 50 });
    expect(s.complete({ key: 'k', owner: 'a', outcome: bytesOf(100, 7), retentionMs: 50 }).ok).toBe(
      true,
    );
    clock.advance(60);
    const again = s.acquire({
      key: 'k',
      owner: 'b',
      fingerprint: 'f2',
      leaseMs: 100,
      retentionMs: 50,
    });
    expect(again).toMatchObject({ kind: 'acquired', fence: 2 });
    const probe = s.acquire({
      key: 'k',
      owner: 'c',
      fingerprint: 'f2',
      leaseMs: 100,
      retentionMs: 50,
    });
    expect(probe.kind).toBe('found');
    if (probe.kind === 'found') {
      expect(probe.record).toMatchObject({ status: 'in_progress', owner: 'b', fingerprint: 'f2' });
      expect(probe.record.outcome).toBeUndefined();
    }
    // released, then taken again
    expect(s.release({ key: 'k', owner: 'b', retentionMs: 1000 }).ok).toBe(true);
    const third = s.acquire({
      key: 'k',
      owner: 'c',
      fingerprint: 'f3',
      leaseMs: 100,
      retentionMs: 50,
    });
    expect(third).toMatchObject({ kind: 'acquired', fence: 3 });
    // the old owner cannot complete the new acquisition
    expect(s.complete({ key: 'k', owner: 'b', outcome: bytesOf(3, 1), retentionMs: 50 }).ok).toBe(
      false,
    );
    expect(s.extend({ key: 'k', owner: 'a', leaseMs: 100, retentionMs: 50 }).ok).toBe(false);
    expect(s.release({ key: 'k', owner: 'b', retentionMs: 50 }).ok).toBe(false);
  });

  it('keys of one scope are never visible under another scope (engine over the memory store)', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const idem = createIdempotency<string>({ store });
    const runs: string[] = [];
    const a = await idem.execute({ key: 'same', scope: 'A' }, async () => {
      runs.push('A');
      return 'from A';
    });
    const b = await idem.execute({ key: 'same', scope: 'B' }, async () => {
      runs.push('B');
      return 'from B';
    });
    const n = await idem.execute({ key: 'same' }, async () => {
      runs.push('none');
      return 'from none';
    });
    expect([a.value, b.value, n.value]).toEqual(['from A', 'from B', 'from none']);
    expect(runs).toEqual(['A', 'B', 'none']);
    expect((await idem.execute({ key: 'same', scope: 'A' }, async () => 'x')).value).toBe('from A');
  });
});

describe('memory7 review: outcomes copied, not viewed', () => {
  it('an outcome that is a view with an offset into a larger buffer is replayed exactly, whatever the caller does to it afterwards', () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const s = syncOf(store);
    const backing = bytesOf(4096, 3);
    const view = backing.subarray(1001, 1001 + 777);
    const want = view.slice();
    s.acquire({ key: 'k', owner: 'a', fingerprint: '', leaseMs: 1000, retentionMs: 10_000 });
    expect(s.complete({ key: 'k', owner: 'a', outcome: view, retentionMs: 10_000 }).ok).toBe(true);
    backing.fill(0);
    const found = s.acquire({
      key: 'k',
      owner: 'b',
      fingerprint: '',
      leaseMs: 1000,
      retentionMs: 10_000,
    });
    expect(found.kind).toBe('found');
    if (found.kind === 'found') {
      expect(Buffer.from(found.record.outcome as Uint8Array).equals(Buffer.from(want))).toBe(true);
      // the caller's copy is its own
      (found.record.outcome as Uint8Array).fill(1);
    }
    const again = s.acquire({
      key: 'k',
      owner: 'c',
      fingerprint: '',
      leaseMs: 1000,
      retentionMs: 10_000,
    });
    if (again.kind === 'found')
      expect(Buffer.from(again.record.outcome as Uint8Array).equals(Buffer.from(want))).toBe(true);
    else expect.unreachable();
    // a redelivered complete with the very bytes succeeds; with others it does not
    expect(s.complete({ key: 'k', owner: 'a', outcome: want, retentionMs: 10_000 }).ok).toBe(true);
    expect(s.complete({ key: 'k', owner: 'a', outcome: view, retentionMs: 10_000 }).ok).toBe(false);
  });

  it('outcomes over a SharedArrayBuffer, a resizable ArrayBuffer and a Buffer are held by value', () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const s = syncOf(store);
    const shared = new Uint8Array(new SharedArrayBuffer(64)).subarray(5, 50);
    shared.set(bytesOf(45, 9));
    const Resizable = ArrayBuffer as unknown as new (
      n: number,
      o: { maxByteLength: number },
    ) => ArrayBuffer & {
      resize(n: number): void;
    };
    const rab = new Resizable(32, { maxByteLength: 128 });
    const tracking = new Uint8Array(rab, 4);
    tracking.set(bytesOf(28, 11));
    const buf = Buffer.from(bytesOf(40, 13));
    const cases: Array<[string, Uint8Array]> = [
      ['shared', shared],
      ['resizable', tracking],
      ['buffer', buf],
    ];
    for (const [key, outcome] of cases) {
      const want = Uint8Array.from(outcome);
      s.acquire({ key, owner: 'a', fingerprint: '', leaseMs: 1000, retentionMs: 10_000 });
      expect(s.complete({ key, owner: 'a', outcome, retentionMs: 10_000 }).ok).toBe(true);
      outcome.fill(0);
      if (key === 'resizable') rab.resize(4);
      const found = s.acquire({
        key,
        owner: 'b',
        fingerprint: '',
        leaseMs: 1000,
        retentionMs: 10_000,
      });
      if (found.kind !== 'found') expect.unreachable();
      else expect(Array.from(found.record.outcome as Uint8Array)).toEqual(Array.from(want));
    }
  });

  it('the engine replays what it recorded, whatever is encoded after it (reused encoding buffer, view form)', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const idem = createIdempotency<unknown>({ store });
    const values = Array.from({ length: 50 }, (_, i) => ({
      i,
      text: 'x'.repeat(i * 37),
      u: '\u4e00'.repeat(i),
    }));
    for (const [i, v] of values.entries()) await idem.execute({ key: `k${i}` }, async () => v);
    for (const [i, v] of values.entries()) {
      const r = await idem.execute({ key: `k${i}` }, async () => 'ran again');
      expect(r).toEqual({ value: v, replayed: true });
    }
  });
});

describe('memory7 review: begin replays (view form) are copies', () => {
  it('a replay got from begin keeps its body after other replays rewrite the store’s view buffer', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const idem = createIdempotency<string>({ store });
    await idem.execute({ key: 'a' }, async () => 'A'.repeat(50));
    await idem.execute({ key: 'b' }, async () => 'B'.repeat(50));
    const ra = await idem.begin({ key: 'a' });
    if (ra.kind !== 'replay') throw new Error(ra.kind);
    const before = Buffer.from(ra.outcome.body).toString();
    expect(before).toContain('AAAA');
    await idem.begin({ key: 'b' });
    await idem.execute({ key: 'b' }, async () => 'x');
    expect(Buffer.from(ra.outcome.body).toString()).toBe(before);
  });
});

describe('memory7 review: an async outcome codec over the synchronous store', () => {
  it('runs once under contention, replays through the codec, and a codec that cannot open is OUTCOME_CORRUPT (never a run)', async () => {
    const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
    let breakOpen = false;
    const outcomeCodec = {
      async seal(b: Uint8Array) {
        await pause(1);
        const o = new Uint8Array(b.length + 1);
        o[0] = 7;
        for (let i = 0; i < b.length; i++) o[i + 1] = (b[i] as number) ^ 0x5a;
        return o;
      },
      async open(b: Uint8Array) {
        await pause(1);
        if (breakOpen) throw new Error('key service down');
        const o = new Uint8Array(b.length - 1);
        for (let i = 0; i < o.length; i++) o[i] = (b[i + 1] as number) ^ 0x5a;
        return o;
      },
    };
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const idem = createIdempotency<unknown>({
      store,
      outcomeCodec,
      wait: { timeoutMs: 3_000, pollMs: 2 },
    });
    let runs = 0;
    const rs = await Promise.all(
      Array.from({ length: 20 }, () =>
        idem.execute({ key: 'k' }, async () => {
          runs++;
          await pause(20);
          return { v: 'secret' };
        }),
      ),
    );
    expect(runs).toBe(1);
    expect(rs.every((r) => JSON.stringify(r.value) === '{"v":"secret"}')).toBe(true);
    const begun = await idem.begin({ key: 'k' });
    if (begun.kind !== 'replay') throw new Error(begun.kind);
    expect(Buffer.from(begun.outcome.body).toString()).toBe('{"v":"secret"}');
    breakOpen = true;
    await expect(idem.execute({ key: 'k' }, async () => 1)).rejects.toMatchObject({
      code: 'OUTCOME_CORRUPT',
    });
    await expect(idem.begin({ key: 'k' })).rejects.toMatchObject({ code: 'OUTCOME_CORRUPT' });
    expect(runs).toBe(1);
  });
});

/** A memory store whose every call answers a promise after `delayMs` (no synchronous forms). */
function delayed(inner: IdempotencyStore, delayMs: number): IdempotencyStore {
  const later = <T>(f: () => Promise<T>) =>
    new Promise<void>((r) => setTimeout(r, delayMs)).then(f);
  return {
    capabilities: inner.capabilities,
    acquire: (i) => later(() => inner.acquire(i)),
    complete: (i) => later(() => inner.complete(i)),
    release: (i) => later(() => inner.release(i)),
    extend: (i) => later(() => inner.extend(i)),
    get: (k) => inner.get(k),
  } as IdempotencyStore;
}

describe('memory7 review: exactly once', () => {
  for (const [name, make] of [
    ['the synchronous memory store', () => createMemoryStore({ sweepIntervalMs: 0 })],
    [
      'an async store (every call delayed)',
      () => delayed(createMemoryStore({ sweepIntervalMs: 0 }), 2),
    ],
  ] as const) {
    it(`runs the operation once for 40 concurrent executions on one key: ${name}`, async () => {
      const store = make();
      const idem = createIdempotency<number>({ store, wait: { timeoutMs: 5_000, pollMs: 2 } });
      let runs = 0;
      const results = await Promise.allSettled(
        Array.from({ length: 40 }, () =>
          idem.execute({ key: 'one', fingerprint: 'f' }, async () => {
            runs++;
            await new Promise((r) => setTimeout(r, 20));
            return 42;
          }),
        ),
      );
      expect(runs).toBe(1);
      for (const r of results)
        expect(r).toEqual({ status: 'fulfilled', value: expect.objectContaining({ value: 42 }) });
      expect(results.filter((r) => r.status === 'fulfilled' && !r.value.replayed)).toHaveLength(1);
    });

    it(`retries after a failed operation run it again, once each: ${name}`, async () => {
      const store = make();
      const idem = createIdempotency<number>({ store });
      let runs = 0;
      for (let i = 0; i < 3; i++) {
        await expect(
          idem.execute({ key: 'fails' }, async () => {
            runs++;
            throw new Error('boom');
          }),
        ).rejects.toThrow('boom');
      }
      expect(runs).toBe(3);
      const ok = await idem.execute({ key: 'fails' }, async () => {
        runs++;
        return 1;
      });
      expect(ok).toEqual({ value: 1, replayed: false });
      const replay = await idem.execute({ key: 'fails' }, async () => {
        runs++;
        return 2;
      });
      expect(replay).toEqual({ value: 1, replayed: true });
      expect(runs).toBe(4);
    });
  }
});

describe('memory7 review: synchronous forms that misbehave', () => {
  /** The memory store with `acquire`'s synchronous form replaced. */
  function withAcquire(
    form: (inner: (i: AcquireInput) => AcquireResult, input: AcquireInput) => AcquireResult,
  ): IdempotencyStore & { inner: ReturnType<typeof createMemoryStore> } {
    const inner = createMemoryStore({ sweepIntervalMs: 0 });
    const sync = syncFormOf(inner.acquire) as (i: AcquireInput) => AcquireResult;
    return Object.assign(Object.create(null), inner, {
      capabilities: inner.capabilities,
      acquire: answersSynchronously((input: AcquireInput) => form(sync, input)),
      complete: inner.complete,
      release: inner.release,
      extend: inner.extend,
      get: inner.get,
      inner,
    });
  }

  it('a sync acquire that throws a plain error: StoreUnavailableError, as a rejection of begin (never a synchronous throw)', async () => {
    const store = withAcquire(() => {
      throw new Error('socket gone');
    });
    const idem = createIdempotency<number>({ store });
    let begun: Promise<unknown> | undefined;
    expect(() => {
      begun = idem.begin({ key: 'k' });
    }).not.toThrow();
    await expect(begun).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(idem.execute({ key: 'k' }, async () => 1)).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
  });

  it('a sync acquire that throws InvalidInputError keeps its type; a bad key rejects begin, not throws', async () => {
    const store = withAcquire(() => {
      throw new InvalidInputError('nope');
    });
    const idem = createIdempotency<number>({ store });
    await expect(idem.begin({ key: 'k' })).rejects.toBeInstanceOf(InvalidInputError);
    const fine = createIdempotency<number>({ store: createMemoryStore({ sweepIntervalMs: 0 }) });
    let begun: Promise<unknown> | undefined;
    expect(() => {
      begun = fine.begin({ key: 42 as unknown as string });
    }).not.toThrow();
    await expect(begun).rejects.toBeInstanceOf(InvalidKeyError);
    const aborted = AbortSignal.abort(new Error('stop'));
    let waited: Promise<unknown> | undefined;
    expect(() => {
      waited = fine.begin({ key: 'k' }, { signal: aborted });
    }).not.toThrow();
    await expect(waited).rejects.toThrow('stop');
  });

  it('a sync acquire that sometimes answers a promise: still exactly once, and a lost answer is given back', async () => {
    let n = 0;
    const store = withAcquire((inner, input) => {
      n++;
      if (n % 2 === 0)
        return Promise.resolve().then(() => inner(input)) as unknown as AcquireResult;
      return inner(input);
    });
    const idem = createIdempotency<number>({ store, wait: { timeoutMs: 2_000, pollMs: 1 } });
    let runs = 0;
    const out = await Promise.all(
      Array.from({ length: 20 }, () =>
        idem.execute({ key: 'k' }, async () => {
          runs++;
          await new Promise((r) => setTimeout(r, 10));
          return 7;
        }),
      ),
    );
    expect(runs).toBe(1);
    expect(out.every((r) => r.value === 7)).toBe(true);
  });

  it('a sync acquire applied, then throwing (answer lost): the key is given back, a retry runs', async () => {
    const store = withAcquire((inner, input) => {
      inner(input);
      throw new Error('applied, answer lost');
    });
    const idem = createIdempotency<number>({ store, leaseMs: 60_000 });
    await expect(idem.execute({ key: 'k' }, async () => 1)).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    await idem.drain(1_000);
    // Given back: another engine over the same records acquires at once (no IN_PROGRESS for 60 s).
    const other = createIdempotency<number>({ store: store.inner });
    const begun = await other.begin({ key: 'k' });
    expect(begun.kind).toBe('acquired');
  });

  it('a sync acquire that re-enters the engine on the same key: the operation still runs once', async () => {
    let idem!: ReturnType<typeof createIdempotency<number>>;
    let runs = 0;
    const nested: Promise<unknown>[] = [];
    let depth = 0;
    const store = withAcquire((inner, input) => {
      if (depth === 0) {
        depth++;
        nested.push(
          idem
            .execute({ key: 'k' }, async () => {
              runs++;
              return 2;
            })
            .catch((e: unknown) => e),
        );
        depth--;
      }
      return inner(input);
    });
    idem = createIdempotency<number>({ store, wait: { timeoutMs: 2_000, pollMs: 1 } });
    const outer = await idem
      .execute({ key: 'k' }, async () => {
        runs++;
        return 1;
      })
      .catch((e: unknown) => e);
    const inner = await Promise.all(nested);
    expect(runs).toBe(1);
    const values = [outer, ...inner].map((r) => (r as { value?: number }).value);
    expect(new Set(values).size).toBe(1);
  });

  it('a sync complete that throws a plain error: StoreUnavailableError, the key kept (never released), recorded by the retries', async () => {
    const inner = createMemoryStore({ sweepIntervalMs: 0 });
    const sync = syncFormOf(inner.complete) as (i: CompleteInput) => OwnerWriteResult;
    let fail = 2;
    const store = {
      capabilities: inner.capabilities,
      acquire: inner.acquire,
      release: inner.release,
      extend: inner.extend,
      get: inner.get,
      complete: answersSynchronously((input: CompleteInput) => {
        if (fail-- > 0) throw new Error('complete failed');
        return sync(input);
      }),
    } as IdempotencyStore;
    const idem = createIdempotency<number>({
      store,
      completionWaitMs: 5_000,
      storeTimeoutMs: 5_000,
    });
    let runs = 0;
    const r = await idem.execute({ key: 'k' }, async () => {
      runs++;
      return 5;
    });
    expect(r).toEqual({ value: 5, replayed: false });
    expect(await idem.execute({ key: 'k' }, async () => 6)).toEqual({ value: 5, replayed: true });
    expect(runs).toBe(1);

    // Failing for good within a short wait: the caller gets StoreUnavailableError, the key stays held.
    fail = 1e9;
    const short = createIdempotency<number>({
      store,
      completionWaitMs: 50,
      storeTimeoutMs: 50,
      leaseMs: 60_000,
    });
    await expect(short.execute({ key: 'k2' }, async () => 1)).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    await expect(short.execute({ key: 'k2' }, async () => 2)).rejects.toMatchObject({
      code: 'IN_PROGRESS',
    });
    fail = 0;
    await short.drain(5_000);
    expect(await short.execute({ key: 'k2' }, async () => 3)).toEqual({ value: 1, replayed: true });
  });
});

describe('memory7 review: bad input', () => {
  it('a huge key is a typed rejection; long keys isolated from each other, huge outcomes refused with a marker', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0, maxOutcomeBytes: 1_000 });
    const idem = createIdempotency<string>({ store });
    // Over the key limit: a typed rejection, nothing stored.
    let huge: Promise<unknown> | undefined;
    expect(() => {
      huge = idem.execute({ key: 'a'.repeat(1_000_000) }, async () => 'never');
    }).not.toThrow();
    await expect(huge).rejects.toBeInstanceOf(InvalidKeyError);
    expect(store.size).toBe(0);
    const k1 = `${'a'.repeat(254)}1`;
    const k2 = `${'a'.repeat(254)}2`;
    expect((await idem.execute({ key: k1 }, async () => 'one')).value).toBe('one');
    expect((await idem.execute({ key: k2 }, async () => 'two')).value).toBe('two');
    expect(await idem.execute({ key: k1 }, async () => 'x')).toEqual({
      value: 'one',
      replayed: true,
    });
    let runs = 0;
    await expect(
      idem.execute({ key: 'big' }, async () => {
        runs++;
        return 'y'.repeat(5_000);
      }),
    ).rejects.toMatchObject({ code: 'OUTCOME_TOO_LARGE' });
    await expect(idem.execute({ key: 'big' }, async () => 'z')).rejects.toMatchObject({
      code: 'OUTCOME_NOT_RECORDED',
    });
    expect(runs).toBe(1);
  });

  it('non-Uint8Array outcomes and bad strings are InvalidInputError before anything changes', () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const s = syncOf(store);
    s.acquire({ key: 'k', owner: 'a', fingerprint: '', leaseMs: 1000, retentionMs: 1000 });
    const bytesBefore = store.bytes;
    for (const outcome of [
      'text',
      [1, 2, 3],
      new Uint16Array(4),
      new DataView(new ArrayBuffer(4)),
      { length: 3 },
      null,
    ]) {
      expect(() =>
        s.complete({
          key: 'k',
          owner: 'a',
          outcome: outcome as unknown as Uint8Array,
          retentionMs: 1000,
        }),
      ).toThrow(InvalidInputError);
    }
    for (const key of ['', 'x'.repeat(1025), 5 as unknown as string]) {
      expect(() =>
        s.acquire({ key, owner: 'a', fingerprint: '', leaseMs: 1, retentionMs: 1 }),
      ).toThrow(InvalidInputError);
    }
    for (const leaseMs of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() =>
        s.acquire({ key: 'n', owner: 'a', fingerprint: '', leaseMs, retentionMs: 1 }),
      ).toThrow(InvalidInputError);
      expect(() => s.extend({ key: 'k', owner: 'a', leaseMs, retentionMs: 1 })).toThrow(
        InvalidInputError,
      );
    }
    expect(store.bytes).toBe(bytesBefore);
    expect(store.size).toBe(1);
  });

  it('negative / NaN timing options are refused', () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    for (const opts of [
      { leaseMs: -1 },
      { leaseMs: Number.NaN },
      { heartbeatMs: -5 },
      { heartbeatMs: Number.NaN },
      { heartbeatMs: 0 },
      { leaseMs: 100, heartbeatMs: 100 },
      { maxHoldMs: Number.NaN },
      { maxHoldMs: -1 },
      { storeTimeoutMs: Number.NaN },
      { retentionMs: -1 },
    ]) {
      expect(() => createIdempotency({ store, ...opts }), JSON.stringify(opts)).toThrow(
        InvalidInputError,
      );
    }
    for (const opts of [
      { maxBytes: Number.NaN },
      { maxBytes: -1 },
      { sweepIntervalMs: -1 },
      { maxEntries: 0 },
    ]) {
      expect(() => createMemoryStore(opts), JSON.stringify(opts)).toThrow(InvalidInputError);
    }
  });
});
