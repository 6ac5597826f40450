import { createRequire } from 'node:module';
import v8 from 'node:v8';
import vm from 'node:vm';
import {
  type AcquireInput,
  answersSynchronously,
  type CompleteInput,
  createIdempotency,
  deriveStorageKey,
  type ExtendInput,
  type IdempotencyStore,
  LeaseLostError,
  OutcomeNotRecordedError,
  type ReleaseInput,
  SYNC_FORM,
  syncFormOf,
} from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore, type MemoryStore } from '../src/index.js';

// Adversarial review of wt/core10: `execute` hands the memory store an ASCII JSON value's
// encoding as a string (an engine-only `latin1Outcome` form of `complete`, held in a
// core-private WeakMap with the engine-only acquire forms). Everything a caller can see must
// be what the bytes path gives, the store's byte bound must hold, and no caller may reach the
// engine-only forms.

const MiB = 1024 * 1024;

/** A store whose `complete` is a plain wrapper: no synchronous form, so the engine sends bytes. */
function bytesOnly(inner: MemoryStore): MemoryStore {
  return Object.assign(Object.create(inner) as MemoryStore, {
    complete: (input: CompleteInput) => inner.complete(input),
  });
}

/** Both paths on fresh stores: the string path (the store itself) and the bytes path. */
function twoPaths(options: Parameters<typeof createMemoryStore>[0] = {}) {
  const viaString = createMemoryStore({ sweepIntervalMs: 0, ...options });
  const viaBytes = createMemoryStore({ sweepIntervalMs: 0, ...options });
  return {
    viaString,
    viaBytes,
    a: createIdempotency({ store: viaString, heartbeatMs: false }),
    b: createIdempotency({ store: bytesOnly(viaBytes), heartbeatMs: false }),
  };
}

const settle = <T>(p: Promise<T>) =>
  p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error: (error as Error)?.constructor?.name }),
  );

let gcFn: (() => void) | undefined;
function gc(): void {
  if (!gcFn) {
    v8.setFlagsFromString('--expose-gc');
    gcFn = vm.runInNewContext('gc') as () => void;
  }
  gcFn();
  gcFn();
}

/**
 * Heap bytes held per byte the store accounts, after recording `count` values of about 1 MiB
 * each (`make(i)`), the values kept alive by the caller throughout (so only what the store
 * holds is measured).
 */
async function heapPerAccountedByte(
  wrap: boolean,
  make: (i: number) => unknown,
  count = 12,
): Promise<number> {
  const inner = createMemoryStore({
    sweepIntervalMs: 0,
    maxBytes: 64 * MiB,
    maxOutcomeBytes: 4 * MiB,
  });
  const idem = createIdempotency({ store: wrap ? bytesOnly(inner) : inner, heartbeatMs: false });
  const values = Array.from({ length: count }, (_, i) => make(i));
  // Warm the path once (code, buffers) before measuring.
  await idem.execute({ key: 'warm' }, async () => ({ s: 'warm' }));
  // Flatten the values first (a repeated string is a rope until read), so only what the store
  // holds is measured; a large Latin-1 string Node makes is external memory: both counted.
  for (const value of values) JSON.stringify(value);
  gc();
  const used = () => {
    const { heapUsed, external } = process.memoryUsage();
    return heapUsed + external;
  };
  const heapBefore = used();
  const bytesBefore = inner.bytes;
  for (let i = 0; i < count; i++) await idem.execute({ key: `k${i}` }, async () => values[i]);
  gc();
  const held = used() - heapBefore;
  const accounted = inner.bytes - bytesBefore;
  expect(inner.size).toBe(count + 1);
  values.length = 0;
  return held / accounted;
}

/** An ASCII string of `n` characters that V8 keeps two bytes a character (a slice of a two-byte string). */
const twoByteAscii = (n: number, i: number) =>
  `\u0100${String.fromCharCode(97 + (i % 26)).repeat(n)}`.slice(1);
const oneByteAscii = (n: number, i: number) => String.fromCharCode(97 + (i % 26)).repeat(n);

describe('core10 review: bounded memory of string-held outcomes', { timeout: 180_000 }, () => {
  it('bytes path: a two-byte-represented ASCII value is held at about one heap byte per accounted byte', async () => {
    const ratio = await heapPerAccountedByte(true, (i) => ({ s: twoByteAscii(MiB, i) }));
    expect(ratio).toBeGreaterThan(0.5);
    expect(ratio).toBeLessThan(1.4);
  });

  it('string path: a one-byte ASCII value is held at about one heap byte per accounted byte', async () => {
    const ratio = await heapPerAccountedByte(false, (i) => ({ s: oneByteAscii(MiB, i) }));
    expect(ratio).toBeGreaterThan(0.5);
    expect(ratio).toBeLessThan(1.4);
  });

  // FINDING MEDIUM (bounded memory, regression against main, Node 20 / V8 11 only):
  // `jsonValueLatin1` keeps `JSON.stringify`'s text as it is. V8 11's stringifier (Node 20,
  // still in `engines`) switches to a two-byte result as soon as it meets a string held two
  // bytes a character (a slice of a string that had one non-Latin-1 character, a utf16le
  // decode), even when every character is ASCII. The store accounts `held.length` (one byte a
  // character) but the heap holds two: measured 1.98-2.00 heap bytes per accounted byte on
  // Node 20.10 and 20.20, against 0.99-1.00 on main and on the bytes path (`hold` makes a
  // one-byte string with latin1Slice), and 1.00 on Node 22/24 (V8 12+ makes one-byte output).
  // A store at its `maxBytes` (128 MiB default) then holds up to ~256 MiB of outcomes. Fix:
  // make the held string one-byte where that is not guaranteed (e.g. on V8 < 12 take the bytes
  // path, or latin1Write the text into a buffer and latin1Slice it), or account such a string
  // at two bytes a character.
  // On V8 12+ the same test holds (a regression test there); on V8 11 it is the finding.
  it('FINDING MEDIUM (V8 < 12), fixed: string path: a two-byte-represented ASCII value is held at about one heap byte per accounted byte', async () => {
    const ratio = await heapPerAccountedByte(false, (i) => ({ s: twoByteAscii(MiB, i) }));
    expect(ratio).toBeGreaterThan(0.5);
    expect(ratio).toBeLessThan(1.4);
  });

  it('eviction of string-held records keeps bytes and entries within the bounds, and every live record replays its own value', async () => {
    let now = 1_000_000;
    const clock = { now: () => now };
    const maxBytes = 64 * 1024;
    const store = createMemoryStore({ sweepIntervalMs: 0, clock, maxBytes, maxEntries: 40 });
    const idem = createIdempotency({ store, clock, heartbeatMs: false, retentionMs: 1_000 });
    const kept = new Map<string, unknown>();
    for (let i = 0; i < 300; i++) {
      const value = { i, s: 'q'.repeat((i * 37) % 3_000) };
      const result = await settle(idem.execute({ key: `e${i}` }, async () => value));
      if (result.ok) kept.set(`e${i}`, value);
      expect(store.bytes).toBeLessThanOrEqual(maxBytes);
      expect(store.size).toBeLessThanOrEqual(40);
      if (i % 7 === 0) now += 400; // older records fall out of retention
    }
    let live = 0;
    for (const [key, value] of kept) {
      const record = await store.get(deriveStorageKey(null, key));
      if (record?.status !== 'completed') continue;
      live++;
      expect(await idem.execute({ key }, async () => 'ran')).toEqual({ value, replayed: true });
    }
    expect(live).toBeGreaterThan(0);
  });
});

describe('core10 review: string path against bytes path', () => {
  const values: [string, () => unknown][] = [
    ['lone surrogates', () => ({ s: '\ud800x\udfff', t: '\udbff' })],
    ['U+0080..U+00FF', () => ({ s: '\u0080\u00a0\u00e9\u00ff' })],
    ['U+2028 / U+2029', () => ({ s: 'a\u2028b\u2029' })],
    ['NUL and control characters', () => ({ s: '\u0000\u0001\u001f\u007f' })],
    ['astral', () => ['\u{1f600}']],
    ['ASCII only', () => ({ n: 1, a: [true, null, 'x'], s: 'plain' })],
    ['a number', () => 42],
    ['a string', () => 'just text'],
    ['null', () => null],
    ['undefined', () => undefined],
    ['a function', () => () => 1],
    ['NaN / -0 / Infinity', () => [Number.NaN, -0, Number.POSITIVE_INFINITY]],
    ['a Date', () => new Date(0)],
    ['BigInt (not serializable)', () => ({ n: 1n })],
    [
      'cyclic (not serializable)',
      () => {
        const o: Record<string, unknown> = {};
        o.self = o;
        return o;
      },
    ],
  ];

  for (const [name, make] of values) {
    it(`${name}: same first answer, same recorded bytes, same replay, same accounting`, async () => {
      const { viaString, viaBytes, a, b } = twoPaths();
      const key = 'v';
      const firstA = await settle(a.execute({ key }, async () => make()));
      const firstB = await settle(b.execute({ key }, async () => make()));
      expect(firstA.ok).toBe(firstB.ok);
      if (!firstA.ok && !firstB.ok) expect(firstA.error).toBe(firstB.error);
      const storageKey = deriveStorageKey(null, key);
      const held = await viaString.get(storageKey);
      const sent = await viaBytes.get(storageKey);
      expect(held?.status).toBe(sent?.status);
      expect(held?.outcome).toEqual(sent?.outcome);
      expect(viaString.bytes - (held?.owner.length ?? 0)).toBe(
        viaBytes.bytes - (sent?.owner.length ?? 0),
      );
      const againA = await settle(a.execute({ key }, async () => 'ran'));
      const againB = await settle(b.execute({ key }, async () => 'ran'));
      expect(againA).toEqual(againB);
      if (againA.ok) expect(againA.value.replayed).toBe(true);
      // begin() replays the string-held record as the bytes-held one.
      const beginA = await settle(a.begin({ key }));
      const beginB = await settle(b.begin({ key }));
      expect(beginA.ok).toBe(beginB.ok);
      if (beginA.ok && beginB.ok) {
        expect(beginA.value.kind).toBe(beginB.value.kind);
        if (beginA.value.kind === 'replay' && beginB.value.kind === 'replay')
          expect(beginA.value.outcome).toEqual(beginB.value.outcome);
      } else expect(beginA).toEqual(beginB);
    });
  }

  it('a value whose toJSON / getter answers differently each call is stringified once: the recorded value is the one first returned', async () => {
    const { viaString, a } = twoPaths();
    let calls = 0;
    const value = {
      toJSON() {
        calls++;
        return calls === 1 ? { v: 'ascii-first' } : { v: 'second-\u00e9' };
      },
    };
    let getterCalls = 0;
    const withGetter = {
      get g() {
        getterCalls++;
        return getterCalls === 1 ? 'first' : 'later-\u20ac';
      },
    };
    await a.execute({ key: 't' }, async () => value);
    await a.execute({ key: 'g' }, async () => withGetter);
    expect(calls).toBe(1);
    expect(getterCalls).toBe(1);
    expect(await a.execute({ key: 't' }, async () => 'ran')).toEqual({
      value: { v: 'ascii-first' },
      replayed: true,
    });
    expect(await a.execute({ key: 'g' }, async () => 'ran')).toEqual({
      value: { g: 'first' },
      replayed: true,
    });
    const record = await viaString.get(deriveStorageKey(null, 't'));
    expect(new TextDecoder().decode(record?.outcome)).toContain('{"v":"ascii-first"}');
  });

  it('values around maxOutcomeBytes (store limit and engine limit) are refused or recorded exactly as by the bytes path', async () => {
    // The encoding's size of a value: a known-size record's outcome length.
    const probe = twoPaths();
    await probe.b.execute({ key: 'p' }, async () => 'x'.repeat(100));
    const probeRecord = await probe.viaBytes.get(deriveStorageKey(null, 'p'));
    const overhead = (probeRecord?.outcome?.length ?? 0) - 100; // header + two quotes
    expect(overhead).toBeGreaterThan(2);
    for (const limitOn of ['store', 'engine'] as const) {
      const limit = 4_096;
      for (const delta of [-1, 0, 1]) {
        const value = 'z'.repeat(limit - overhead + delta);
        const run = async (wrap: boolean) => {
          const inner = createMemoryStore({
            sweepIntervalMs: 0,
            ...(limitOn === 'store' ? { maxOutcomeBytes: limit } : {}),
          });
          const idem = createIdempotency({
            store: wrap ? bytesOnly(inner) : inner,
            heartbeatMs: false,
            ...(limitOn === 'engine' ? { maxOutcomeBytes: limit } : {}),
          });
          const first = await settle(idem.execute({ key: 'edge' }, async () => value));
          const again = await settle(idem.execute({ key: 'edge' }, async () => 'ran'));
          const record = await inner.get(deriveStorageKey(null, 'edge'));
          return {
            first,
            again,
            outcome: record?.outcome,
            bytes: inner.bytes - (record?.owner.length ?? 0),
          };
        };
        const s = await run(false);
        const bb = await run(true);
        expect(s, `${limitOn} ${delta}`).toEqual(bb);
        expect(s.first.ok, `${limitOn} ${delta}`).toBe(delta <= 0);
        if (delta > 0) expect(s.again).toEqual({ ok: false, error: OutcomeNotRecordedError.name });
      }
    }
  });

  it('a completion that does not fit a full store gets StoreFullError and a replay answers not recorded, as through the bytes path', async () => {
    const run = async (wrap: boolean) => {
      const maxBytes = 48 * 1024;
      const inner = createMemoryStore({ sweepIntervalMs: 0, maxBytes, maxOutcomeBytes: 32 * 1024 });
      const idem = createIdempotency({
        store: wrap ? bytesOnly(inner) : inner,
        heartbeatMs: false,
      });
      const filler = createIdempotency({ store: inner, heartbeatMs: false });
      const first = await settle(
        idem.execute({ key: 'big' }, async () => {
          // Fill the store with completed records within retention while this one runs.
          for (let i = 0; i < 200; i++) {
            const r = await settle(
              filler.execute({ key: `f${i}` }, async () => ({ i, pad: 'p'.repeat(500) })),
            );
            if (!r.ok) break;
          }
          return { data: 'b'.repeat(20_000) };
        }),
      );
      const again = await settle(idem.execute({ key: 'big' }, async () => 'ran'));
      return { first, again, withinBound: inner.bytes <= maxBytes, size: inner.size };
    };
    const s = await run(false);
    const bb = await run(true);
    expect(s.first).toEqual({ ok: false, error: 'StoreFullError' });
    expect(s).toEqual(bb);
    expect(s.withinBound).toBe(true);
  });
});

describe('core10 review: owners, fences, takeover', () => {
  it('a stale owner whose lease was taken over cannot record its ASCII value (LeaseLostError), the new owner value stays, as through the bytes path', async () => {
    const run = async (wrap: boolean, firstValue: unknown) => {
      let now = 5_000_000;
      const clock = { now: () => now };
      const inner = createMemoryStore({ sweepIntervalMs: 0, clock });
      const idem = createIdempotency({
        store: wrap ? bytesOnly(inner) : inner,
        clock,
        heartbeatMs: false,
        leaseMs: 1_000,
        maxHoldMs: 1_000_000,
      });
      let finish: ((v: unknown) => void) | undefined;
      let runs = 0;
      const first = settle(
        idem.execute({ key: 'race' }, () => {
          runs++;
          return new Promise((resolve) => {
            finish = resolve;
          });
        }),
      );
      for (let i = 0; i < 1_000 && finish === undefined; i++)
        await new Promise((r) => setTimeout(r, 1));
      expect(finish).toBeDefined();
      now += 5_000; // the first lease passed
      const second = await idem.execute({ key: 'race' }, async () => {
        runs++;
        return { owner: 'second' };
      });
      finish?.(firstValue);
      const firstResult = await first;
      const replay = await idem.execute({ key: 'race' }, async () => 'ran');
      const record = await inner.get(deriveStorageKey(null, 'race'));
      return { firstResult, second, replay, runs, outcome: record?.outcome };
    };
    for (const firstValue of [{ owner: 'first' }, { owner: 'first-\u00e9' }]) {
      const s = await run(false, firstValue);
      const bb = await run(true, firstValue);
      expect(s.firstResult).toEqual({ ok: false, error: LeaseLostError.name });
      expect(s.second).toEqual({ value: { owner: 'second' }, replayed: false });
      expect(s.replay).toEqual({ value: { owner: 'second' }, replayed: true });
      expect(s.runs).toBe(2);
      expect(s).toEqual(bb);
    }
  });

  it('a redelivered public complete after a string-held record: same bytes OWNED, other bytes and other owners refused, record unchanged', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const idem = createIdempotency({ store, heartbeatMs: false });
    await idem.execute({ key: 'r' }, async () => ({ v: 'x' }));
    const storageKey = deriveStorageKey(null, 'r');
    const record = await store.get(storageKey);
    if (!record?.outcome) throw new Error('no outcome');
    const input = { key: storageKey, owner: record.owner, retentionMs: 1_000 };
    expect(await store.complete({ ...input, outcome: record.outcome })).toEqual({ ok: true });
    // The same bytes as a different-length view (a prefix) must not count as the same.
    expect(
      await store.complete({ ...input, outcome: record.outcome.subarray(0, -1) }),
    ).toMatchObject({ ok: false });
    expect(
      await store.complete({ ...input, owner: `${record.owner}x`, outcome: record.outcome }),
    ).toMatchObject({ ok: false });
    expect(await store.release({ ...input })).toMatchObject({ ok: false });
    expect((await store.get(storageKey))?.outcome).toEqual(record.outcome);
    expect((await store.get(storageKey))?.expiresAt).toBe(record.expiresAt);
  });
});

// A namespacing wrapper of one shared memory store: every call's key gets the tenant's prefix.
type Wrap = (inner: MemoryStore, prefix: string) => IdempotencyStore;
const ns = <I extends { key: string }>(prefix: string, input: I): I => ({
  ...input,
  key: prefix + input.key,
});

/** The store's methods, each prefixing the key. */
const prefixed = (inner: MemoryStore, p: string) => ({
  acquire: (i: AcquireInput) => inner.acquire(ns(p, i)),
  complete: (i: CompleteInput) => inner.complete(ns(p, i)),
  release: (i: ReleaseInput) => inner.release(ns(p, i)),
  extend: (i: ExtendInput) => inner.extend(ns(p, i)),
  get: (key: string) => inner.get(p + key),
});

/** Each method's public synchronous form, prefixing the key, kept synchronous. */
const prefixedSync = (inner: MemoryStore, p: string): IdempotencyStore => {
  const sync = <I extends { key: string }, R>(m: (i: I) => Promise<R>) => {
    const form = syncFormOf(m);
    if (!form) throw new Error('no sync form');
    return answersSynchronously((i: I) => form(ns(p, i)));
  };
  return {
    capabilities: inner.capabilities,
    acquire: sync(inner.acquire),
    complete: sync(inner.complete),
    release: sync(inner.release),
    extend: sync(inner.extend),
    get: (key: string) => inner.get(p + key),
  };
};

const wrappers: [string, Wrap][] = [
  ['answersSynchronously over the inner public sync forms', prefixedSync],
  ['plain object', (inner, p) => ({ capabilities: inner.capabilities, ...prefixed(inner, p) })],
  [
    'Object.assign(wrapper, method) (copies enumerable properties)',
    (inner, p) => ({
      capabilities: inner.capabilities,
      acquire: Object.assign((i: AcquireInput) => inner.acquire(ns(p, i)), inner.acquire),
      complete: Object.assign((i: CompleteInput) => inner.complete(ns(p, i)), inner.complete),
      release: Object.assign((i: ReleaseInput) => inner.release(ns(p, i)), inner.release),
      extend: Object.assign((i: ExtendInput) => inner.extend(ns(p, i)), inner.extend),
      get: (key: string) => inner.get(p + key),
    }),
  ],
  [
    'a Proxy of the store (get trap)',
    (inner, p) =>
      new Proxy(inner, {
        get(target, prop, receiver) {
          const m = Reflect.get(target, prop, receiver);
          if (prop === 'get') return (key: string) => target.get(p + key);
          if (['acquire', 'complete', 'release', 'extend'].includes(prop as string))
            return (i: { key: string }) => (m as (x: unknown) => unknown).call(target, ns(p, i));
          return m;
        },
      }),
  ],
  [
    'the store with its methods replaced (spread)',
    (inner, p) => ({
      ...inner,
      capabilities: inner.capabilities,
      ...prefixed(inner, p),
    }),
  ],
];

describe('core10 review: isolation of namespacing wrappers over one memory store', () => {
  for (const [name, wrap] of wrappers) {
    it(`${name}: two tenants with the same key each run once and replay their own value`, async () => {
      const inner = createMemoryStore({ sweepIntervalMs: 0 });
      const a = createIdempotency({ store: wrap(inner, 'tenant-a:'), heartbeatMs: false });
      const b = createIdempotency({ store: wrap(inner, 'tenant-b:'), heartbeatMs: false });
      const direct = createIdempotency({ store: inner, heartbeatMs: false });
      let runs = 0;
      const op = (v: unknown) => async () => {
        runs++;
        return v;
      };
      expect(await a.execute({ key: 'k' }, op({ t: 'a' }))).toEqual({
        value: { t: 'a' },
        replayed: false,
      });
      expect(await b.execute({ key: 'k' }, op({ t: 'b' }))).toEqual({
        value: { t: 'b' },
        replayed: false,
      });
      expect(await direct.execute({ key: 'k' }, op({ t: 'direct' }))).toEqual({
        value: { t: 'direct' },
        replayed: false,
      });
      expect(await a.execute({ key: 'k' }, op('ran'))).toEqual({
        value: { t: 'a' },
        replayed: true,
      });
      expect(await b.execute({ key: 'k' }, op('ran'))).toEqual({
        value: { t: 'b' },
        replayed: true,
      });
      expect(runs).toBe(3);
      expect(inner.size).toBe(3);
      const storageKey = deriveStorageKey(null, 'k');
      expect(await inner.get(`tenant-a:${storageKey}`)).toMatchObject({ status: 'completed' });
      expect(await inner.get(`tenant-b:${storageKey}`)).toMatchObject({ status: 'completed' });
    });
  }

  // FINDING MEDIUM (isolation; pre-existing on main, not made by this branch: the same test
  // fails there): a wrapper made as a Proxy of each *method* (apply trap only, as some
  // instrumentation does) forwards property reads to the original method, so
  // `method[SYNC_FORM]` is the memory store's own synchronous form: the engine calls it
  // directly with the un-prefixed key and the wrapper's namespacing is skipped for every
  // synchronous call (acquire, complete, release, extend). Two tenants then share records:
  // tenant B gets tenant A's value replayed and its operation never runs. (Since this branch
  // keys the declared forms by identity in a WeakMap, the engine-only forms are no longer
  // reached this way; the public sync form still is.) Fix: trust `SYNC_FORM` only on a method
  // `answersSynchronously` built (record them in a WeakSet, as `declaredForms` now does) or
  // only as an own data property (`Object.getOwnPropertyDescriptor`: a Proxy without a
  // `getOwnPropertyDescriptor` trap still forwards it, so the WeakSet is the sound fix).
  type MethodWrap = <I extends { key: string }, R>(
    m: (i: I) => Promise<R>,
    p: string,
  ) => (i: I) => Promise<R>;
  const tenantsEachRunOnce = async (wrapMethod: MethodWrap) => {
    const inner = createMemoryStore({ sweepIntervalMs: 0 });
    const wrap = (p: string): IdempotencyStore => ({
      capabilities: inner.capabilities,
      acquire: wrapMethod(inner.acquire, p),
      complete: wrapMethod(inner.complete, p),
      release: wrapMethod(inner.release, p),
      extend: wrapMethod(inner.extend, p),
      get: (key: string) => inner.get(p + key),
    });
    const a = createIdempotency({ store: wrap('tenant-a:'), heartbeatMs: false });
    const b = createIdempotency({ store: wrap('tenant-b:'), heartbeatMs: false });
    let runs = 0;
    await a.execute({ key: 'k' }, async () => {
      runs++;
      return { t: 'a' };
    });
    const second = await b.execute({ key: 'k' }, async () => {
      runs++;
      return { t: 'b' };
    });
    expect(second).toEqual({ value: { t: 'b' }, replayed: false });
    expect(runs).toBe(2);
  };

  it('FINDING MEDIUM, fixed: a Proxy of each method (apply trap): two tenants with the same key each run once', () =>
    tenantsEachRunOnce(
      (m, p) => new Proxy(m, { apply: (target, _this, [i]) => target(ns(p, i)) }),
    ));

  // The same cause: a wrapper function whose prototype is the original method inherits its SYNC_FORM.
  it('FINDING MEDIUM, fixed: a wrapper whose prototype is the method: two tenants with the same key each run once', () =>
    tenantsEachRunOnce((m, p) =>
      Object.setPrototypeOf((i: Parameters<typeof m>[0]) => m(ns(p, i)), m),
    ));
});

describe('core10 review: the engine-only forms stay out of reach', () => {
  it('no own or inherited property of the store or its methods is a form other than the public synchronous one', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const idem = createIdempotency({ store, heartbeatMs: false });
    await idem.execute({ key: 'x' }, async () => ({ v: 1 }));
    const seen = new Set<unknown>();
    const walk = (o: unknown, depth: number) => {
      if (
        depth > 4 ||
        o === null ||
        (typeof o !== 'object' && typeof o !== 'function') ||
        seen.has(o)
      )
        return;
      if (o === Function.prototype || o === Object.prototype) return;
      seen.add(o);
      for (const k of Reflect.ownKeys(o as object)) {
        const d = Reflect.getOwnPropertyDescriptor(o as object, k);
        if (d && 'value' in d) walk(d.value, depth + 1);
      }
      walk(Reflect.getPrototypeOf(o as object), depth + 1);
    };
    walk(store, 0);
    const functions = [...seen].filter((v) => typeof v === 'function');
    for (const m of ['acquire', 'complete', 'release', 'extend'] as const) {
      const method = store[m] as (i: never) => Promise<unknown>;
      expect(Reflect.ownKeys(method).filter((k) => typeof k === 'symbol')).toEqual([SYNC_FORM]);
      expect(syncFormOf(method)).toBeTypeOf('function');
    }
    // The public synchronous complete does not take a string outcome.
    const sync = syncFormOf(store.complete);
    const begun = await idem.begin({ key: 'held' });
    if (begun.kind !== 'acquired') throw new Error('not acquired');
    const { storageKey, owner } = begun.execution;
    expect(() =>
      sync?.({
        key: storageKey,
        owner,
        retentionMs: 1_000,
        outcomeLatin1: '\u0100',
      } as unknown as CompleteInput),
    ).toThrow();
    expect((await store.get(storageKey))?.status).toBe('in_progress');
    // Every function reachable is a method, its sync form, a getter or the admin's.
    expect(functions.length).toBeLessThan(40);
    await begun.execution.release();
  });

  it('replacing a method, or only its SYNC_FORM in place, after the engine was made: the replacement is called (nothing bypasses it)', async () => {
    for (const how of ['method', 'sync form in place'] as const) {
      const store = createMemoryStore({ sweepIntervalMs: 0 });
      const idem = createIdempotency({ store, heartbeatMs: false });
      const seen: string[] = [];
      const original = store.complete;
      if (how === 'method') {
        store.complete = async (i: CompleteInput) => {
          seen.push(i.key);
          return original(i);
        };
      } else {
        const sync = syncFormOf(original);
        Object.defineProperty(original, SYNC_FORM, {
          value: (i: CompleteInput) => {
            seen.push(i.key);
            return sync?.(i);
          },
          writable: true,
          configurable: true,
        });
      }
      await idem.execute({ key: 'w' }, async () => ({ ascii: true }));
      expect(seen, how).toEqual([deriveStorageKey(null, 'w')]);
      expect(await idem.execute({ key: 'w' }, async () => 'ran')).toEqual({
        value: { ascii: true },
        replayed: true,
      });
    }
  });

  it('a second copy of @idem/core (its CommonJS build) on the same store: the same bytes, replays across both copies', async () => {
    const require = createRequire(import.meta.url);
    const other = require('@idem/core') as typeof import('@idem/core');
    expect(other.createIdempotency).not.toBe(createIdempotency);
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const reference = createMemoryStore({ sweepIntervalMs: 0 });
    const esm = createIdempotency({ store, heartbeatMs: false });
    const cjs = other.createIdempotency({ store, heartbeatMs: false });
    const ref = createIdempotency({ store: bytesOnly(reference), heartbeatMs: false });
    for (const [i, value] of [{ a: 'ascii' }, { b: 'caf\u00e9' }, [1, 'x', null]].entries()) {
      await esm.execute({ key: `esm${i}` }, async () => value);
      await cjs.execute({ key: `cjs${i}` }, async () => value);
      await ref.execute({ key: `ref${i}` }, async () => value);
      const fromEsm = await store.get(deriveStorageKey(null, `esm${i}`));
      const fromCjs = await store.get(deriveStorageKey(null, `cjs${i}`));
      const fromRef = await reference.get(deriveStorageKey(null, `ref${i}`));
      expect(fromEsm?.outcome).toEqual(fromRef?.outcome);
      expect(fromCjs?.outcome).toEqual(fromRef?.outcome);
      expect(await cjs.execute({ key: `esm${i}` }, async () => 'ran')).toEqual({
        value,
        replayed: true,
      });
      expect(await esm.execute({ key: `cjs${i}` }, async () => 'ran')).toEqual({
        value,
        replayed: true,
      });
    }
  });

  it("forms declared by another copy of core are not seen by this engine, and this copy's forms not by the other engine", async () => {
    const require = createRequire(import.meta.url);
    const other = require('@idem/core') as typeof import('@idem/core');
    for (const [declare, engine] of [
      [other.answersSynchronously, createIdempotency],
      [answersSynchronously, other.createIdempotency],
    ] as const) {
      const inner = createMemoryStore({ sweepIntervalMs: 0 });
      const called: string[] = [];
      const spy =
        <I, R>(name: string, f: (i: I) => R) =>
        (i: I) => {
          called.push(name);
          return f(i);
        };
      const form = <I, R>(m: (i: I) => Promise<R>) => syncFormOf(m) as (i: I) => R;
      const store: IdempotencyStore = {
        capabilities: inner.capabilities,
        acquire: declare(spy('acquire', form(inner.acquire)), {
          view: spy('view', form(inner.acquire)),
          latin1: spy('latin1', form(inner.acquire)),
        }),
        complete: declare(spy('complete', form(inner.complete)), {
          copiesInput: true,
          latin1Outcome: spy('latin1Outcome', () => {
            throw new Error('latin1Outcome called across copies');
          }),
        }),
        release: declare(form(inner.release)),
        extend: declare(form(inner.extend)),
        get: (key) => inner.get(key),
      };
      const idem = engine({ store, heartbeatMs: false });
      await idem.execute({ key: 'x' }, async () => ({ v: 'ascii' }));
      expect(await idem.execute({ key: 'x' }, async () => 'ran')).toEqual({
        value: { v: 'ascii' },
        replayed: true,
      });
      expect(called).toEqual(['acquire', 'complete', 'acquire']);
    }
  });

  // FINDING LOW (claim (1) "no caller can reach them"): core's `declaredForms.get(method)`
  // calls `WeakMap.prototype.get` as it is when the engine runs, so code in the process that
  // replaces `WeakMap.prototype.get` (a polyfill, an instrumentation or a malicious
  // dependency) receives the private map as `this` and can read the engine-only forms. The
  // memory store's `latin1Outcome` then keeps any string it is given: only its type and length
  // are checked, so a string with characters above U+00FF (or a slice of a huge string) is
  // held, accounted at one byte a character and later read back as other bytes. Fix: capture
  // `WeakMap.prototype.get/set` at module load (`const get = Function.prototype.call.bind(
  // WeakMap.prototype.get)`), and let `latin1Outcome` refuse characters above 0xFF
  // (or a cheap check that the engine's header leads the string).
  it('FINDING LOW, fixed: patching WeakMap.prototype.get does not hand the engine-only forms to a caller', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const idem = createIdempotency({ store, heartbeatMs: false });
    const original = WeakMap.prototype.get;
    const maps: WeakMap<object, unknown>[] = [];
    WeakMap.prototype.get = function (this: WeakMap<object, unknown>, k: object) {
      maps.push(this);
      return original.call(this, k);
    };
    try {
      await idem.execute({ key: 'bait' }, async () => ({ v: 1 }));
    } finally {
      WeakMap.prototype.get = original;
    }
    let reached: unknown;
    for (const map of maps) {
      const declared = original.call(map, store.complete) as
        | { latin1Outcome?: unknown }
        | undefined;
      if (declared?.latin1Outcome) reached = declared.latin1Outcome;
    }
    if (typeof reached === 'function') {
      // What a caller can then do: hold a string that is not one byte a character.
      const begun = await idem.begin({ key: 'planted' });
      if (begun.kind !== 'acquired') throw new Error('not acquired');
      const { storageKey, owner } = begun.execution;
      (reached as (i: unknown) => unknown)({
        key: storageKey,
        owner,
        retentionMs: 60_000,
        outcomeLatin1: '\u0100\u20ac',
      });
      const record = await store.get(storageKey);
      expect(record?.outcome).toEqual(Uint8Array.of(0x00, 0xac)); // the string was kept and read back cut
    }
    expect(reached).toBeUndefined();
  });
});

describe('core10 review: codec, clock faults, concurrency on the string path', () => {
  it('with an outcomeCodec the value goes through seal once (the string path is off) and replays', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    let seals = 0;
    let opens = 0;
    // A codec that flips every byte: a record written past it would not open.
    const flip = (b: Uint8Array) => b.map((x) => x ^ 0x5a);
    const idem = createIdempotency({
      store,
      heartbeatMs: false,
      outcomeCodec: {
        seal: async (encoded) => {
          seals++;
          return flip(encoded);
        },
        open: async (stored) => {
          opens++;
          return flip(stored);
        },
      },
    });
    await idem.execute({ key: 'c' }, async () => ({ ascii: 'yes' }));
    expect(seals).toBe(1);
    expect(await idem.execute({ key: 'c' }, async () => 'ran')).toEqual({
      value: { ascii: 'yes' },
      replayed: true,
    });
    expect(opens).toBe(1);
    const record = await store.get(deriveStorageKey(null, 'c'));
    expect(new TextDecoder().decode(record?.outcome)).not.toContain('ascii');
  });

  it('a clock that answers NaN at complete time: the same error and the same record as through the bytes path', async () => {
    const run = async (wrap: boolean) => {
      let bad = false;
      const clock = { now: () => (bad ? Number.NaN : 7_000_000) };
      const inner = createMemoryStore({ sweepIntervalMs: 0, clock });
      const idem = createIdempotency({
        store: wrap ? bytesOnly(inner) : inner,
        heartbeatMs: false,
      });
      const first = await settle(
        idem.execute({ key: 'nan' }, async () => {
          bad = true;
          return { v: 'ascii' };
        }),
      );
      bad = false;
      const record = await inner.get(deriveStorageKey(null, 'nan'));
      const again = await settle(idem.execute({ key: 'nan' }, async () => 'ran'));
      return {
        first,
        status: record?.status,
        hasOutcome: record?.outcome !== undefined,
        again: again.ok ? again.value.replayed : again.error,
      };
    };
    const s = await run(false);
    const bb = await run(true);
    expect(s.first.ok).toBe(false);
    expect(s).toEqual(bb);
  });

  it('a store attempt that fails for the store (StoreUnavailableError from its clock) goes on with the bytes: recorded and replayed as through the bytes path', async () => {
    const { StoreUnavailableError } = await import('@idem/core');
    const run = async (wrap: boolean) => {
      let failures = 0;
      const clock = {
        now: () => {
          if (failures > 0) {
            failures--;
            throw new StoreUnavailableError('clock down');
          }
          return 9_000_000;
        },
      };
      const inner = createMemoryStore({ sweepIntervalMs: 0, clock });
      const idem = createIdempotency({
        store: wrap ? bytesOnly(inner) : inner,
        heartbeatMs: false,
        completionWaitMs: 20_000,
      });
      const first = await settle(
        idem.execute({ key: 'flaky' }, async () => {
          failures = 2;
          return { v: 'ascii', n: [1, 2, 3] };
        }),
      );
      const record = await inner.get(deriveStorageKey(null, 'flaky'));
      const again = await settle(idem.execute({ key: 'flaky' }, async () => 'ran'));
      return { first, status: record?.status, outcome: record?.outcome, again, left: failures };
    };
    const s = await run(false);
    const bb = await run(true);
    expect(s.first).toEqual({
      ok: true,
      value: { value: { v: 'ascii', n: [1, 2, 3] }, replayed: false },
    });
    expect(s.status).toBe('completed');
    expect(s.left).toBe(0);
    expect(s).toEqual(bb);
  });

  it('events of a string-path execute are those of the bytes path (types, outcomeBytes, fence), and a replay', async () => {
    const run = async (wrap: boolean, value: unknown) => {
      const inner = createMemoryStore({ sweepIntervalMs: 0 });
      const events: Record<string, unknown>[] = [];
      const idem = createIdempotency({
        store: wrap ? bytesOnly(inner) : inner,
        heartbeatMs: false,
        onEvent: (event) => {
          // Timings differ run to run: every `…Ms` field and the storage key are left out.
          const rest = Object.fromEntries(
            Object.entries(event).filter(([k]) => !k.endsWith('Ms') && k !== 'storageKey'),
          );
          events.push(rest);
        },
      });
      await idem.execute({ key: 'ev' }, async () => value);
      await idem.execute({ key: 'ev' }, async () => 'ran');
      return events;
    };
    for (const value of [{ a: 'ascii' }, 'x'.repeat(5_000), { b: '\u00e9' }]) {
      const s = await run(false, value);
      expect(s.some((e) => e.type === 'completed')).toBe(true);
      expect(s).toEqual(await run(true, value));
    }
  });

  it('concurrent executes of one key on the string path: the operation runs once, every caller gets its value', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const idem = createIdempotency({ store, heartbeatMs: false, wait: { timeoutMs: 20_000 } });
    let runs = 0;
    const results = await Promise.all(
      Array.from({ length: 20 }, () =>
        idem.execute({ key: 'same' }, async () => {
          runs++;
          await new Promise((r) => setTimeout(r, 20));
          return { once: true };
        }),
      ),
    );
    expect(runs).toBe(1);
    for (const r of results) expect(r.value).toEqual({ once: true });
    expect(results.filter((r) => !r.replayed)).toHaveLength(1);
  });
});
