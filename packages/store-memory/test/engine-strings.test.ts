import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createIdempotency, deriveStorageKey, ManualClock } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

const MiB = 1024 * 1024;

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

/** A fresh flat 1 MB string, as a request body would be; printable ASCII throughout. */
const body = (i: number) => JSON.parse(JSON.stringify(`${i}-`.repeat(400_000))) as string;

describe("the engine's own strings (key and owner kept without a copy)", () => {
  it('records made through execute and begin keep nothing of the strings their key, scope and fingerprint were cut from', async () => {
    const gc = collector();
    const store = createMemoryStore({ clock: new ManualClock(), sweepIntervalMs: 0 });
    const idem = createIdempotency({ store, heartbeatMs: false });
    const before = heapAfterCollection(gc);
    for (let i = 0; i < 20; i++) {
      const text = body(i);
      const request = {
        key: text.slice(0, 200),
        scope: text.slice(1, 101),
        fingerprint: text.slice(2, 66),
      };
      const { replayed } = await idem.execute(request, async () => ({ i }));
      expect(replayed).toBe(false);
    }
    for (let i = 20; i < 40; i++) {
      const text = body(i);
      const begun = await idem.begin({
        key: text.slice(0, 200),
        scope: text.slice(1, 101),
        fingerprint: text.slice(2, 66),
      });
      if (begun.kind !== 'acquired') throw new Error(`not acquired: ${begun.kind}`);
      await begun.execution.complete({ meta: {}, body: new Uint8Array([i]) });
    }
    const grown = heapAfterCollection(gc) - before;
    expect(store.size).toBe(40);
    // 40 records with short strings (about 40 KiB): not the 48 MB of bodies they were cut from.
    expect(grown).toBeLessThan(4 * MiB);
  });

  it('keeps the storage key and the owner token the engine made, and still answers owner-checked writes by value', async () => {
    const store = createMemoryStore({ clock: new ManualClock(), sweepIntervalMs: 0 });
    const idem = createIdempotency({ store, heartbeatMs: false });
    const begun = await idem.begin({ key: 'k-1', scope: ['tenant', 'op'] });
    if (begun.kind !== 'acquired') throw new Error(`not acquired: ${begun.kind}`);
    const { execution } = begun;
    const storageKey = deriveStorageKey(['tenant', 'op'], 'k-1');
    expect(execution.storageKey).toBe(storageKey);
    const held = await store.get(storageKey);
    expect(held).toMatchObject({ status: 'in_progress', owner: execution.owner, fingerprint: '' });
    // An owner-checked write with an equal string made elsewhere (not the engine's own) works.
    const sameOwner = `${execution.owner} `.slice(0, -1);
    expect(
      await store.extend({ key: storageKey, owner: sameOwner, leaseMs: 1_000, retentionMs: 1_000 }),
    ).toMatchObject({
      ok: true,
    });
    expect(
      await store.extend({
        key: storageKey,
        owner: `${sameOwner}x`,
        leaseMs: 1_000,
        retentionMs: 1_000,
      }),
    ).toMatchObject({ ok: false });
    await execution.complete({ meta: { n: 1 }, body: new Uint8Array([1, 2, 3]) });
    const replay = await idem.begin({ key: 'k-1', scope: ['tenant', 'op'] });
    expect(replay.kind).toBe('replay');
    if (replay.kind === 'replay') {
      expect(replay.outcome.meta).toEqual({ n: 1 });
      expect([...replay.outcome.body]).toEqual([1, 2, 3]);
    }
  });
});
