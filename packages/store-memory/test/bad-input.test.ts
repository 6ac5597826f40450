import { type Clock, InvalidInputError, ManualClock } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore, type MemoryStore } from '../src/index.js';

const LEASE_MS = 1_000;
const RETENTION_MS = 60_000;

/** A full store of released tombstones, which any bad call could wrongly flush to "make room". */
async function fullOfTombstones(): Promise<{ store: MemoryStore; clock: ManualClock }> {
  const clock = new ManualClock();
  const store = createMemoryStore({ clock, sweepIntervalMs: 0, maxEntries: 4 });
  for (const key of ['t1', 't2', 't3']) {
    await store.acquire({
      key,
      owner: 'o',
      fingerprint: '',
      leaseMs: 1,
      retentionMs: RETENTION_MS,
    });
    await store.release({ key, owner: 'o', retentionMs: RETENTION_MS });
  }
  await store.acquire({
    key: 'k',
    owner: 'me',
    fingerprint: 'fp',
    leaseMs: LEASE_MS,
    retentionMs: RETENTION_MS,
  });
  return { store, clock };
}

async function snapshot(store: MemoryStore) {
  const records = [];
  for (const key of ['t1', 't2', 't3', 'k']) records.push(await store.get(key));
  return { size: store.size, bytes: store.bytes, records };
}

const good = {
  key: 'new',
  owner: 'o2',
  fingerprint: 'fp',
  leaseMs: LEASE_MS,
  retentionMs: RETENTION_MS,
};
const long = 'x'.repeat(1_025);
const badStrings: [string, Record<string, unknown>][] = [
  ['a numeric fingerprint', { fingerprint: 123 }],
  ['an array fingerprint', { fingerprint: ['fp'] }],
  ['a fingerprint over 1,024 characters', { fingerprint: long }],
  ['a numeric key', { key: 5 }],
  ['an object key', { key: {} }],
  ['an empty key', { key: '' }],
  ['a key over 1,024 characters', { key: long }],
  ['an undefined owner', { owner: undefined }],
  ['an empty owner', { owner: '' }],
  ['an owner over 1,024 characters', { owner: long }],
];

describe('bad input gets INVALID_INPUT and changes nothing', () => {
  it.each(badStrings)('acquire with %s', async (_, patch) => {
    const { store } = await fullOfTombstones();
    const before = await snapshot(store);
    await expect(store.acquire({ ...good, ...patch } as never)).rejects.toBeInstanceOf(
      InvalidInputError,
    );
    expect(await snapshot(store)).toEqual(before);
  });

  it.each(badStrings.filter(([name]) => !name.includes('fingerprint')))(
    'complete, release and extend with %s',
    async (_, patch) => {
      const { store } = await fullOfTombstones();
      const before = await snapshot(store);
      const write = { key: 'k', owner: 'me', retentionMs: RETENTION_MS, ...patch } as never;
      const calls = [
        store.complete({ ...(write as object), outcome: new Uint8Array(3) } as never),
        store.release(write),
        store.extend({ ...(write as object), leaseMs: LEASE_MS } as never),
      ];
      for (const call of calls) await expect(call).rejects.toBeInstanceOf(InvalidInputError);
      expect(await snapshot(store)).toEqual(before);
    },
  );

  it.each([
    ['a string', 'hello'],
    ['an array of numbers', [1, 2, 3]],
    ['an ArrayBuffer', new ArrayBuffer(3)],
    ['a DataView', new DataView(new ArrayBuffer(3))],
    ['a Uint16Array', new Uint16Array(3)],
    ['null', null],
  ])('complete with an outcome that is %s', async (_, outcome) => {
    const { store } = await fullOfTombstones();
    const before = await snapshot(store);
    await expect(
      store.complete({ key: 'k', owner: 'me', outcome, retentionMs: RETENTION_MS } as never),
    ).rejects.toBeInstanceOf(InvalidInputError);
    expect(await snapshot(store)).toEqual(before);
    expect((await store.get('k'))?.status).toBe('in_progress');
  });

  it.each([null, undefined, 'k', 42])('a call whose input is %s', async (input) => {
    const { store } = await fullOfTombstones();
    for (const call of [store.acquire, store.complete, store.release, store.extend]) {
      await expect(call(input as never)).rejects.toBeInstanceOf(InvalidInputError);
    }
    if (typeof input !== 'string') {
      await expect(store.get(input as never)).rejects.toBeInstanceOf(InvalidInputError);
    }
  });

  it('a clock that answers NaN is refused, never read as "every lease has passed"', async () => {
    let now = 1_000;
    const clock: Clock = { now: () => now };
    const store = createMemoryStore({ clock, sweepIntervalMs: 0 });
    await store.acquire({ ...good, owner: 'first' });
    now = Number.NaN;
    await expect(store.acquire({ ...good, owner: 'second' })).rejects.toBeInstanceOf(
      InvalidInputError,
    );
    now = 1_001;
    expect(await store.acquire({ ...good, owner: 'second' })).toMatchObject({ kind: 'found' });
    expect(await store.get('new')).toMatchObject({ owner: 'first', fence: 1 });
  });

  it.each([
    ['a negative sweepIntervalMs', { sweepIntervalMs: -1 }],
    ['a NaN sweepIntervalMs', { sweepIntervalMs: Number.NaN }],
    ['an infinite sweepIntervalMs (Node would sweep every 1 ms)', { sweepIntervalMs: Infinity }],
    ['a sweepIntervalMs over 2^31 - 1 ms (same)', { sweepIntervalMs: 2 ** 31 }],
    ['a clock without now()', { clock: {} }],
  ])('options with %s', (_, options) => {
    expect(() => createMemoryStore(options as never)).toThrow(InvalidInputError);
  });

  it('accounts a string of characters above U+00FF at two bytes a character, as V8 stores it', async () => {
    const store = createMemoryStore({ sweepIntervalMs: 0 });
    const input = { owner: 'o', fingerprint: '', leaseMs: LEASE_MS, retentionMs: RETENTION_MS };
    await store.acquire({ ...input, key: 'é'.repeat(500) });
    const latin1 = store.bytes;
    await store.acquire({ ...input, key: 'ж'.repeat(500) });
    expect(store.bytes - latin1).toBe(latin1 + 500);
  });
});
