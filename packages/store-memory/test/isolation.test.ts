import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ManualClock } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

const MiB = 1024 * 1024;
const RETENTION_MS = 60_000;

function setup() {
  const clock = new ManualClock();
  const store = createMemoryStore({ clock, sweepIntervalMs: 0 });
  const acquire = (key: string, owner = `o-${key}`, fingerprint = 'fp') =>
    store.acquire({ key, owner, fingerprint, leaseMs: 1_000, retentionMs: RETENTION_MS });
  const complete = (key: string, outcome: Uint8Array, owner = `o-${key}`) =>
    store.complete({ key, owner, outcome, retentionMs: RETENTION_MS });
  return { clock, store, acquire, complete };
}

/** The collector, for measuring what the store really retains. */
function collector(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

function heapAfterCollection(gc: () => void): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

describe('copies in and out', () => {
  it('a Buffer outcome is copied: mutating the input or a returned record never changes the store', async () => {
    const { store, acquire, complete } = setup();
    await acquire('k');
    const input = Buffer.from([1, 2, 3]);
    expect(await complete('k', input)).toEqual({ ok: true });
    input[0] = 99;
    const first = await store.get('k');
    expect([...(first?.outcome ?? [])]).toEqual([1, 2, 3]);
    first?.outcome?.fill(77);
    const found = await acquire('k', 'someone-else');
    expect(found.kind).toBe('found');
    if (found.kind === 'found') {
      expect([...(found.record.outcome ?? [])]).toEqual([1, 2, 3]);
      found.record.outcome?.fill(55);
    }
    expect([...((await store.get('k'))?.outcome ?? [])]).toEqual([1, 2, 3]);
  });

  it('keeps only the outcome bytes, never the buffer they were a view of', async () => {
    const { store, acquire, complete } = setup();
    await acquire('pooled');
    // A small Buffer is a view of Node's shared 8 KiB pool; a subarray views a larger block.
    await complete('pooled', Buffer.from([4, 5, 6]));
    await acquire('view');
    await complete('view', new Uint8Array(1 * MiB).subarray(10, 20));
    for (const key of ['pooled', 'view']) {
      const outcome = (await store.get(key))?.outcome;
      expect(outcome?.constructor).toBe(Uint8Array);
      expect(outcome?.buffer.byteLength).toBe(outcome?.byteLength);
    }
  });

  it('a returned record is a copy: mutating its fields changes nothing', async () => {
    const { store, acquire } = setup();
    await acquire('k');
    const record = await store.get('k');
    if (record === undefined) throw new Error('no record');
    record.fence = 1_000;
    record.owner = 'thief';
    record.leaseUntil = 0;
    expect(await store.get('k')).toMatchObject({ fence: 1, owner: 'o-k' });
    expect((await acquire('k', 'other')).kind).toBe('found');
  });

  it('retains the strings it was given, not the larger strings they were cut from', async () => {
    const gc = collector();
    const { store, acquire } = setup();
    const before = heapAfterCollection(gc);
    for (let i = 0; i < 40; i++) {
      // A fresh flat 1 MB string per record, as a request body would be; the caller drops it.
      const body = JSON.parse(JSON.stringify(`${i}-`.repeat(400_000))) as string;
      await acquire(body.slice(0, 64), body.slice(1, 37), body.slice(2, 66));
    }
    const grown = heapAfterCollection(gc) - before;
    expect(store.size).toBe(40);
    // 40 records with short strings (about 40 KiB): not the 48 MB of bodies they were cut from.
    expect(grown).toBeLessThan(4 * MiB);
  });
});
