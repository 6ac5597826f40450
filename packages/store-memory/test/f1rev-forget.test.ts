/**
 * f1rev: `forgetOriginsWhenFull` at the edges of the byte budget.
 *
 * FINDING 1 (MEDIUM, fixed): the retry of a key whose remnant was the oldest could forget
 * its own remnant while making room, and the acquire, which counted that remnant as freed by
 * the record replacing it, then counted it freed twice: `bytes` ended above `maxBytes` (by
 * up to one remnant). The key's own remnant is now kept through the eviction (the record
 * replaces it).
 *
 * FINDING 2 (MEDIUM, fixed): a call that could not fit even with every remnant forgotten
 * (an outcome beside completed records, a new key beside live leases) forgot them all
 * anyway, then answered `StoreFullError`: one oversized outcome wiped the origin of every
 * failed request within retention, for nothing. Remnants are now forgotten only when
 * forgetting them is enough.
 */
import { ManualClock, StoreFullError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';
import { checkTable, probeTable, remnantsOf } from './table-invariants.js';

const LEASE_MS = 1_000;
const RETENTION_MS = 1_000_000;

function forgetting(maxBytes: number, maxEntries = 100) {
  const clock = new ManualClock(1_000_000_000);
  const store = createMemoryStore({
    clock,
    maxEntries,
    maxBytes,
    sweepIntervalMs: 0,
    forgetOriginsWhenFull: true,
  });
  const acquire = (key: string, owner: string) =>
    store.acquire({ key, owner, fingerprint: 'fp', leaseMs: LEASE_MS, retentionMs: RETENTION_MS });
  /** `count` requests that fail (each released), one ms apart. */
  const fail = async (count: number, prefix = 'k') => {
    for (let i = 0; i < count; i++) {
      const result = await acquire(`${prefix}${i}`, `o${i}`);
      if (result.kind === 'acquired')
        await store.release({ key: `${prefix}${i}`, owner: `o${i}`, retentionMs: RETENTION_MS });
      clock.advance(1);
    }
  };
  return { clock, store, acquire, fail, table: probeTable(store) };
}

describe('f1rev: forgetOriginsWhenFull', () => {
  it('the retry of the key with the oldest remnant never takes bytes above maxBytes', async () => {
    let carried = 0;
    for (let maxBytes = 3_328; maxBytes < 6_000; maxBytes += 7) {
      for (let failed = 1; failed < 24; failed++) {
        const { store, acquire, fail, table } = forgetting(maxBytes);
        await fail(failed);
        const retry = await acquire('k0', 'retry').catch((error: unknown) => {
          expect(error).toBeInstanceOf(StoreFullError);
          return undefined;
        });
        expect(store.bytes, `maxBytes ${maxBytes}, ${failed} failed`).toBeLessThanOrEqual(maxBytes);
        checkTable(table);
        if (retry?.kind === 'acquired' && retry.origin === 'o0') carried++;
      }
    }
    expect(carried).toBeGreaterThan(100);
  });

  it('a refused outcome forgets no remnant', async () => {
    let refused = 0;
    let forgot = 0;
    for (let size = 1_025; size <= 6_000; size += 25) {
      const { store, acquire, fail, table } = forgetting(10_000);
      // Completed records take most of the budget (outcomes of 1 KiB: the headroom an
      // acquire keeps stays nil); failed requests leave remnants beside them.
      await completed(store, acquire, ['d1', 'd2']);
      await fail(12);
      await acquire('x', 'ox');
      const before = remnantsOf(table).map((r) => r.key);
      expect(before.length).toBeGreaterThan(3);
      const answer = await store
        .complete({ key: 'x', owner: 'ox', outcome: new Uint8Array(size), retentionMs: 1 })
        .catch((error: unknown) => error);
      checkTable(table);
      expect(store.bytes).toBeLessThanOrEqual(10_000);
      if (answer instanceof StoreFullError) {
        refused++;
        // Refused: nothing forgotten (the remnants still carry their requests' origins).
        expect(remnantsOf(table).map((r) => r.key)).toEqual(expect.arrayContaining(before));
      } else {
        expect(answer).toEqual({ ok: true });
        if (remnantsOf(table).length < before.length) forgot++;
      }
    }
    // Every case reached: outcomes that fit by forgetting, and outcomes refused.
    expect(forgot).toBeGreaterThan(10);
    expect(refused).toBeGreaterThan(10);
  });

  it('a refused new key forgets no remnant', async () => {
    // Completed records and remnants; a new key whose record cannot fit beside the
    // completed ones whatever is forgotten (a long key and owner make it larger).
    const { store, acquire, fail, table } = forgetting(6_000);
    await completed(store, acquire, ['done']);
    await fail(6);
    const before = remnantsOf(table).map((r) => r.key);
    expect(before.length).toBeGreaterThan(2);
    await expect(acquire('k'.repeat(1_024), 'x'.repeat(1_024))).rejects.toBeInstanceOf(
      StoreFullError,
    );
    // (The tombstone evicted on the way stays a remnant, as documented.)
    expect(remnantsOf(table).map((r) => r.key)).toEqual(expect.arrayContaining(before));
    checkTable(table);
    // A small one fits.
    expect(await acquire('small', 's')).toMatchObject({ kind: 'acquired', origin: 's' });
    expect(store.bytes).toBeLessThanOrEqual(6_000);
  });
});

/** Records at `keys`, completed with outcomes of 1 KiB. */
async function completed(
  store: ReturnType<typeof createMemoryStore>,
  acquire: (key: string, owner: string) => Promise<unknown>,
  keys: string[],
) {
  for (const key of keys) {
    await acquire(key, key);
    const outcome = new Uint8Array(1_024);
    expect(await store.complete({ key, owner: key, outcome, retentionMs: RETENTION_MS })).toEqual({
      ok: true,
    });
  }
}
