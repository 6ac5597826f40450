/**
 * Mutation audit of src (mutmem): each test here kills a mutant the rest of the suite let
 * live (MUTMEM ids in the titles). Every one states a guarantee of the README or the store
 * contract (packages/core/src/store.ts) that no other test pinned at that point.
 */
import {
  createIdempotency,
  deriveStorageKey,
  InvalidInputError,
  ManualClock,
  OutcomeTooLargeError,
  StoreFullError,
} from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore, type MemoryStoreOptions } from '../src/index.js';
import { costOf, REMNANT_OVERHEAD_BYTES } from '../src/record-table.js';

const LEASE_MS = 1_000;
const RETENTION_MS = 60_000;

function setup(options: MemoryStoreOptions = {}) {
  const clock = new ManualClock(1_000_000_000);
  const store = createMemoryStore({ clock, sweepIntervalMs: 0, ...options });
  const acquire = (key: string, owner: string, fingerprint = 'fp') =>
    store.acquire({ key, owner, fingerprint, leaseMs: LEASE_MS, retentionMs: RETENTION_MS });
  const release = (key: string, owner: string) =>
    store.release({ key, owner, retentionMs: RETENTION_MS });
  const complete = (key: string, owner: string, outcome: Uint8Array) =>
    store.complete({ key, owner, outcome, retentionMs: RETENTION_MS });
  return { clock, store, acquire, release, complete };
}

describe('mutmem: acquire', () => {
  it('M08: the owner of an evicted passed lease acquiring again is its own acquisition: same fence, not a takeover', async () => {
    const { clock, acquire, release } = setup({ maxEntries: 1 });
    expect(await acquire('a', 'late')).toMatchObject({ kind: 'acquired', fence: 1 });
    clock.advance(LEASE_MS);
    // 'a' passed its lease: a new key evicts it (a remnant keeps its owner and fence).
    expect(await acquire('b', 'other')).toMatchObject({ kind: 'acquired' });
    expect(await release('b', 'other')).toEqual({ ok: true });
    // The late owner's redelivered acquire (its first answer lost): as the record would have answered.
    expect(await acquire('a', 'late')).toEqual({
      kind: 'acquired',
      fence: 1,
      leaseUntil: clock.now() + LEASE_MS,
      takeover: false,
      origin: 'late',
    });
  });

  it('M11: the retry of a key whose remnant goes counts the remnant freed (fits exactly, evicts nothing)', async () => {
    const longFp = 'f'.repeat(600);
    // The same calls on a store too large to evict anything give the bytes the retry ends at.
    const steps = async (s: ReturnType<typeof setup>) => {
      await s.acquire('a', 'first');
      await s.release('a', 'first');
      await s.acquire('b', 'ob');
      await s.acquire('c', 'oc');
      await s.complete('b', 'ob', new Uint8Array(1));
      await s.release('c', 'oc');
    };
    const roomy = setup();
    await steps(roomy);
    expect(await roomy.acquire('a', 'retry', longFp)).toMatchObject({ origin: 'first' });
    const exact = roomy.store.bytes;

    const tight = setup({ maxBytes: exact });
    await steps(tight);
    // c's acquire evicted a's tombstone: a remnant, no record.
    expect(await tight.store.get('a')).toBeUndefined();
    expect(tight.store.remnantBytes).toBeGreaterThan(0);
    expect(await tight.acquire('a', 'retry', longFp)).toMatchObject({
      kind: 'acquired',
      origin: 'first',
    });
    // It fitted in place of the remnant: c's tombstone was not evicted for it.
    expect(await tight.store.get('c')).toMatchObject({ status: 'released', owner: 'oc' });
    expect(tight.store.bytes).toBe(exact);
    expect(tight.store.remnantBytes).toBe(0);
  });
});

describe('mutmem: outcome headroom', () => {
  it('M10: a takeover of a passed lease beside a live lease keeps room for one outcome each, not the replaced one twice', async () => {
    const big = new Uint8Array(20_000);
    const average = big.length - 1_024; // the first outcome seen sets the average
    const steps = async (s: ReturnType<typeof setup>) => {
      await s.acquire('warm', 'ow');
      expect(await s.complete('warm', 'ow', big)).toEqual({ ok: true });
      await s.acquire('stuck', 'crashed');
      s.clock.advance(LEASE_MS);
      await s.acquire('live', 'ol');
    };
    const roomy = setup();
    await steps(roomy);
    // Bytes with every record held, before the takeover (within a few bytes of it after).
    const held = roomy.store.bytes;
    // Room for the outcomes of two records in progress (stuck's taker and live), not three.
    const tight = setup({ maxBytes: held + 2 * average + 64 });
    await steps(tight);
    const takeover = await tight.acquire('stuck', 'taker');
    expect(takeover).toMatchObject({ kind: 'acquired', takeover: true, origin: 'crashed' });
    // A new key beside them is refused (three outcomes would not fit).
    await expect(tight.acquire('new', 'on')).rejects.toBeInstanceOf(StoreFullError);
  });
});

describe('mutmem: complete', () => {
  it('M18: the owner of a passed lease completing with a larger outcome never evicts its own record', async () => {
    const outcome = new Uint8Array(3_000).fill(9);
    const steps = async (s: ReturnType<typeof setup>) => {
      await s.acquire('mine', 'late');
      s.clock.advance(10);
      await s.acquire('other', 'ot');
      s.clock.advance(LEASE_MS);
    };
    const roomy = setup();
    await steps(roomy);
    // Both leases passed; 'mine' passed first. The outcome needs ~2 KiB beyond the reserve.
    const tight = setup({ maxBytes: roomy.store.bytes + 1_000 });
    await steps(tight);
    expect(await tight.complete('mine', 'late', outcome)).toEqual({ ok: true });
    const record = await tight.store.get('mine');
    expect(record).toMatchObject({ status: 'completed', owner: 'late' });
    expect(record?.outcome).toEqual(outcome);
    // Room came from the other passed lease.
    expect(await tight.store.get('other')).toBeUndefined();
    expect(tight.store.bytes).toBeLessThanOrEqual(roomy.store.bytes + 1_000);
    // A retry replays it.
    expect(await tight.acquire('mine', 'retry')).toMatchObject({ kind: 'found' });
  });

  it('M27 (kills none: the engine checks the limit before the Latin-1 form): a value encoded one byte over maxOutcomeBytes is refused, one at it recorded', async () => {
    const value = { data: 'z'.repeat(500) };
    // Its encoded length, recorded through a roomy store.
    const probe = createMemoryStore({ sweepIntervalMs: 0 });
    await createIdempotency({ store: probe, heartbeatMs: false }).execute(
      { key: 'k' },
      async () => value,
    );
    const length = (await probe.get(deriveStorageKey(null, 'k')))?.outcome?.length as number;
    expect(length).toBeGreaterThan(500);
    const run = async (maxOutcomeBytes: number) => {
      const store = createMemoryStore({ sweepIntervalMs: 0, maxOutcomeBytes });
      const idem = createIdempotency({ store, heartbeatMs: false });
      return idem.execute({ key: 'k' }, async () => value).catch((error: unknown) => error);
    };
    expect(await run(length - 1)).toBeInstanceOf(OutcomeTooLargeError);
    expect(await run(length)).toMatchObject({ replayed: false });
  });
});

describe('mutmem: bad input', () => {
  it('M29: complete, release and extend refuse a bad retentionMs with InvalidInputError and change nothing', async () => {
    const { store, acquire } = setup();
    await acquire('k', 'o');
    const before = await store.get('k');
    for (const retentionMs of [
      Number.NaN,
      -1,
      Number.POSITIVE_INFINITY,
      '5' as unknown as number,
    ]) {
      const base = { key: 'k', owner: 'o', retentionMs };
      await expect(store.complete({ ...base, outcome: new Uint8Array(1) })).rejects.toBeInstanceOf(
        InvalidInputError,
      );
      await expect(store.release(base)).rejects.toBeInstanceOf(InvalidInputError);
      await expect(store.extend({ ...base, leaseMs: LEASE_MS })).rejects.toBeInstanceOf(
        InvalidInputError,
      );
    }
    expect(await store.get('k')).toEqual(before);
  });
});

/** The interval timers `make` started (setInterval spied on while it runs). */
function intervalsMadeBy<T>(make: () => T): { made: ReturnType<typeof setInterval>[]; value: T } {
  const real = globalThis.setInterval;
  const made: ReturnType<typeof setInterval>[] = [];
  globalThis.setInterval = ((...args: Parameters<typeof setInterval>) => {
    const timer = real(...args);
    made.push(timer);
    return timer;
  }) as typeof setInterval;
  try {
    return { made, value: make() };
  } finally {
    globalThis.setInterval = real;
  }
}

describe('mutmem: bounded time', () => {
  it("M26: the sweep timer is unref'd (a process is never kept alive by a store)", async () => {
    const { made, value: store } = intervalsMadeBy(() =>
      createMemoryStore({ sweepIntervalMs: 5_000 }),
    );
    expect(made).toHaveLength(1);
    expect(made[0]?.hasRef()).toBe(false);
    await store.close();
  });

  it('P09: sweepIntervalMs 0 starts no timer at all', async () => {
    const { made, value: store } = intervalsMadeBy(() => createMemoryStore({ sweepIntervalMs: 0 }));
    expect(made).toHaveLength(0);
    await store.close();
  });
});

describe('mutmem: the sweep timer under a bad clock', () => {
  it('M34: a tick that reads NaN or Infinity from the clock frees nothing', async () => {
    let reading = 1_000_000_000;
    let reads = 0;
    const clock = {
      now: () => {
        reads++;
        return reading;
      },
    };
    const store = createMemoryStore({ clock, sweepIntervalMs: 1 });
    try {
      const input = { fingerprint: 'fp', leaseMs: LEASE_MS, retentionMs: RETENTION_MS };
      await store.acquire({ ...input, key: 'running', owner: 'o1' });
      await store.acquire({ ...input, key: 'done', owner: 'o2' });
      await store.complete({
        key: 'done',
        owner: 'o2',
        outcome: new Uint8Array([1]),
        retentionMs: RETENTION_MS,
      });
      for (const bad of [Number.NaN, Number.POSITIVE_INFINITY]) {
        reading = bad;
        // Wait until the 1 ms timer has read the bad reading a few times (at most 3 s).
        reads = 0;
        for (let waited = 0; reads < 3 && waited < 3_000; waited += 10) {
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        expect(reads).toBeGreaterThanOrEqual(3);
      }
      reading = 1_000_000_000;
      expect(store.size).toBe(2);
      expect(await store.get('running')).toMatchObject({ status: 'in_progress', owner: 'o1' });
      expect(await store.get('done')).toMatchObject({ status: 'completed' });
    } finally {
      await store.close();
    }
  });
});

describe('mutmem: boundaries', () => {
  it('M36: at exactly its expiresAt a remnant is gone: the acquisition begins a new request', async () => {
    const { clock, store, acquire, release } = setup({ maxEntries: 1 });
    await acquire('a', 'first');
    expect(await release('a', 'first')).toEqual({ ok: true });
    const expiresAt = clock.now() + RETENTION_MS;
    // b evicts a's tombstone (a remnant until expiresAt), then frees its entry.
    await acquire('b', 'ob');
    expect(await release('b', 'ob')).toEqual({ ok: true });
    expect(store.remnantBytes).toBeGreaterThan(0);
    clock.set(expiresAt - 1);
    expect(await store.admin.inspect('a')).toBeUndefined();
    clock.set(expiresAt);
    expect(await acquire('a', 'later')).toMatchObject({
      kind: 'acquired',
      origin: 'later',
      takeover: false,
    });
  });

  it('M36: one ms before it, the remnant still carries the origin on', async () => {
    const { clock, acquire, release } = setup({ maxEntries: 1 });
    await acquire('a', 'first');
    await release('a', 'first');
    const expiresAt = clock.now() + RETENTION_MS;
    await acquire('b', 'ob');
    await release('b', 'ob');
    clock.set(expiresAt - 1);
    expect(await acquire('a', 'retry')).toMatchObject({ kind: 'acquired', origin: 'first' });
  });

  it('M40: an outcome that brings the bytes to exactly maxBytes is recorded', async () => {
    const outcome = new Uint8Array(4_000).fill(5);
    const roomy = setup();
    await roomy.acquire('a', 'o');
    await roomy.complete('a', 'o', outcome);
    const exact = roomy.store.bytes;
    const tight = setup({ maxBytes: exact });
    await tight.acquire('a', 'o');
    expect(await tight.complete('a', 'o', outcome)).toEqual({ ok: true });
    expect(tight.store.bytes).toBe(exact);
    expect((await tight.store.get('a'))?.outcome).toEqual(outcome);
    // One byte more does not fit.
    const under = setup({ maxBytes: exact - 1 });
    await under.acquire('a', 'o');
    await expect(under.complete('a', 'o', outcome)).rejects.toBeInstanceOf(StoreFullError);
  });
});

describe('mutmem: admin', () => {
  it('M58: inspect of an evicted key changes nothing: its remnant still carries the origin and bytes stay', async () => {
    const { store, acquire, release } = setup({ maxEntries: 1 });
    await acquire('a', 'first');
    await release('a', 'first');
    await acquire('b', 'ob');
    await release('b', 'ob');
    const bytes = store.bytes;
    const remnants = store.remnantBytes;
    expect(remnants).toBeGreaterThan(0);
    expect(await store.admin.inspect('a')).toBeUndefined();
    expect(store.bytes).toBe(bytes);
    expect(store.remnantBytes).toBe(remnants);
    expect(await acquire('a', 'retry')).toMatchObject({ kind: 'acquired', origin: 'first' });
  });
});

describe('mutmem: fence floor', () => {
  it('M44: an acquire refused after evicting a passed lease puts it back and leaves the fence floor as it was', async () => {
    const long = (c: string) => c.repeat(1_024);
    const roomy = setup();
    await roomy.acquire('p', 'op');
    await roomy.acquire('l', 'ol');
    const two = roomy.store.bytes;
    await roomy.acquire('q', 'oq');
    const three = roomy.store.bytes;

    // Room for exactly three small records in progress.
    const { clock, store, acquire } = setup({ maxBytes: three });
    expect(await acquire('p', 'op')).toMatchObject({ fence: 1 });
    clock.advance(LEASE_MS); // p's lease passed
    expect(await acquire('l', 'ol')).toMatchObject({ fence: 1 });
    expect(store.bytes).toBe(two);
    // A record with the longest strings does not fit even with p evicted: refused, p put back.
    await expect(
      store.acquire({
        key: long('n'),
        owner: long('o'),
        fingerprint: long('f'),
        leaseMs: LEASE_MS,
        retentionMs: RETENTION_MS,
      }),
    ).rejects.toBeInstanceOf(StoreFullError);
    expect(await store.get('p')).toMatchObject({ status: 'in_progress', owner: 'op', fence: 1 });
    expect(store.bytes).toBe(two);
    // Nothing was forgotten: a new key still begins at fence 1.
    expect(await acquire('q', 'oq')).toMatchObject({ kind: 'acquired', fence: 1 });
    expect(store.bytes).toBe(three);
  });
});

describe('mutmem: owner writes, second batch', () => {
  it('N03: forceRelease leaves a tombstone with leaseUntil = now, fence + 1, expiresAt kept', async () => {
    const { clock, store, acquire } = setup();
    await acquire('k', 'stuck');
    const before = await store.get('k');
    clock.advance(100);
    expect(await store.admin.forceRelease('k')).toMatchObject({ fence: 2, previousOwner: 'stuck' });
    const record = await store.admin.inspect('k');
    expect(record).toMatchObject({ status: 'released', fence: 2, leaseUntil: clock.now() });
    expect(record?.expiresAt).toBe(before?.expiresAt);
  });

  it('N08: extend of a passed lease (nobody took it over) renews it from the clock, so a competitor finds it live', async () => {
    const { clock, store, acquire } = setup();
    await acquire('k', 'slow');
    clock.advance(5 * LEASE_MS); // the lease passed long ago
    const renewed = await store.extend({
      key: 'k',
      owner: 'slow',
      leaseMs: LEASE_MS,
      retentionMs: RETENTION_MS,
    });
    expect(renewed).toEqual({ ok: true, leaseUntil: clock.now() + LEASE_MS });
    clock.advance(1);
    expect(await acquire('k', 'competitor')).toMatchObject({ kind: 'found' });
    expect(await store.get('k')).toMatchObject({
      owner: 'slow',
      leaseUntil: clock.now() - 1 + LEASE_MS,
    });
  });

  it('N21: a redelivered complete whose bytes differ only in the first or the last byte is not_owner and changes nothing', async () => {
    const { store, acquire, complete } = setup();
    await acquire('k', 'o');
    expect(await complete('k', 'o', Uint8Array.of(1, 2, 3, 4))).toEqual({ ok: true });
    const recorded = await store.get('k');
    for (const other of [
      Uint8Array.of(9, 2, 3, 4),
      Uint8Array.of(1, 2, 3, 9),
      Uint8Array.of(1, 2, 3),
    ]) {
      expect(await complete('k', 'o', other)).toEqual({ ok: false, reason: 'not_owner' });
    }
    expect(await complete('k', 'o', Uint8Array.of(1, 2, 3, 4))).toEqual({ ok: true });
    expect(await store.get('k')).toEqual(recorded);
  });
});

describe('mutmem: forgetOriginsWhenFull', () => {
  it('P05: a retry refused even with every other remnant forgotten forgets none (its own remnant is not room)', async () => {
    const steps = async (s: ReturnType<typeof setup>) => {
      for (const key of ['a', 'b']) {
        await s.acquire(key, `o${key}`);
        await s.release(key, `o${key}`);
      }
      await s.acquire('c', 'oc'); // evicts a's tombstone: a remnant
      await s.acquire('d', 'od');
      await s.acquire('e', 'oe'); // evicts b's tombstone: a remnant
      expect(await s.store.admin.delete('e')).toMatchObject({ deleted: true }); // an entry free
    };
    const roomy = setup({ maxEntries: 3, forgetOriginsWhenFull: true });
    await steps(roomy);
    const remnants = roomy.store.remnantBytes;
    expect(remnants).toBe(2 * (REMNANT_OVERHEAD_BYTES + 1 + 2));
    const fp = 'f'.repeat(1_024);
    // The retry of 'a': a record in progress carrying origin 'oa'.
    const retry = costOf(1 + fp.length + 'retry'.length + 2, 'in_progress', undefined);
    // One byte short of fitting with b's remnant forgotten; it would fit were a's own counted too.
    const maxBytes = roomy.store.bytes - remnants + retry - 1;
    const tight = setup({ maxEntries: 3, maxBytes, forgetOriginsWhenFull: true });
    await steps(tight);
    expect(tight.store.remnantBytes).toBe(remnants);
    await expect(tight.acquire('a', 'retry', fp)).rejects.toBeInstanceOf(StoreFullError);
    // Refused: no origin forgotten; b's retry still carries its own.
    expect(tight.store.remnantBytes).toBe(remnants);
    expect(await tight.acquire('b', 'again')).toMatchObject({ kind: 'acquired', origin: 'ob' });
  });
});
