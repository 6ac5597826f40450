import { ManualClock } from '@idem/core';
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';

// The store holds outcomes as Latin-1 strings where the runtime has Buffer (Node, Bun, Deno,
// workerd with nodejs_compat), else as bytes (workerd's plain Web platform). Both forms must
// give back every byte 0..255 exactly, account the same bytes and recognise a redelivery.
const RETENTION_MS = 60_000;
const everyByte = Uint8Array.from({ length: 512 }, (_, i) => (i * 167) & 0xff);
const runs = process.env.CI ? 50 : 500;

async function loadStore(withBuffer: boolean) {
  vi.resetModules();
  if (!withBuffer) vi.stubGlobal('Buffer', undefined);
  const { createMemoryStore } = await import('../src/index.js');
  const { hold } = await import('../src/held-outcome.js');
  const clock = new ManualClock();
  const store = createMemoryStore({ clock, sweepIntervalMs: 0 });
  let n = 0;
  /** Acquires a fresh key and completes it with `outcome`; returns the key. */
  const record = async (outcome: Uint8Array) => {
    const key = `k${n++}`;
    await store.acquire({ key, owner: 'o', fingerprint: 'fp', leaseMs: 1_000, retentionMs: 1 });
    expect(await store.complete({ key, owner: 'o', outcome, retentionMs: RETENTION_MS })).toEqual({
      ok: true,
    });
    return key;
  };
  return { store, record, hold };
}

afterEach(() => {
  vi.unstubAllGlobals();
  vi.resetModules();
});

describe.each([
  ['with Buffer (Latin-1 strings)', true, 'string'],
  ['without Buffer (bytes)', false, 'object'],
])('held outcomes %s', (_, withBuffer, form) => {
  it('holds the expected form', async () => {
    const { hold } = await loadStore(withBuffer);
    expect(typeof hold(everyByte)).toBe(form);
  });

  it('gives back every byte 0..255 and recognises only the same bytes as a redelivery', async () => {
    const { store, record } = await loadStore(withBuffer);
    const key = await record(everyByte);
    expect((await store.get(key))?.outcome).toEqual(everyByte);
    const redelivered = { key, owner: 'o', retentionMs: RETENTION_MS };
    expect(await store.complete({ ...redelivered, outcome: everyByte.slice() })).toEqual({
      ok: true,
    });
    for (const at of [0, 0x7f, 0x80, 0x9f, 511]) {
      const other = everyByte.slice();
      other[at] = ((other[at] as number) + 1) & 0xff;
      expect((await store.complete({ ...redelivered, outcome: other })).ok).toBe(false);
    }
    expect((await store.complete({ ...redelivered, outcome: everyByte.subarray(1) })).ok).toBe(
      false,
    );
  });

  it('round-trips random outcomes and accounts their byte length, not UTF-16 units', async () => {
    const { store, record } = await loadStore(withBuffer);
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 4_096 }), async (bytes) => {
        const before = store.bytes;
        const key = await record(bytes);
        const after = store.bytes;
        expect((await store.get(key))?.outcome).toEqual(bytes);
        // Another record of the same size plus one byte costs exactly one byte more.
        const next = await record(Uint8Array.from([...bytes, 0xff]));
        expect(store.bytes - after).toBe(after - before + 1);
        expect((await store.get(next))?.outcome?.at(-1)).toBe(0xff);
      }),
      { numRuns: runs },
    );
  });
});
