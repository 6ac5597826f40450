import { ManualClock, OutcomeTooLargeError, StoreFullError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore, DEFAULT_MAX_BYTES, DEFAULT_MAX_OUTCOME_BYTES } from '../src/index.js';

const MiB = 1024 * 1024;
const RETENTION_MS = 60_000;
const LEASE_MS = 1_000;

function setup(options: { maxBytes?: number; maxOutcomeBytes?: number; maxEntries?: number }) {
  const clock = new ManualClock();
  const store = createMemoryStore({ clock, sweepIntervalMs: 0, ...options });
  const acquire = (key: string, owner = `o-${key}`) =>
    store.acquire({ key, owner, fingerprint: 'fp', leaseMs: LEASE_MS, retentionMs: RETENTION_MS });
  const complete = (key: string, outcome: Uint8Array, owner = `o-${key}`) =>
    store.complete({ key, owner, outcome, retentionMs: RETENTION_MS });
  return { clock, store, acquire, complete };
}

describe('byte budget', () => {
  it('caps outcomes at 8 MiB by default and refuses a larger one before writing', async () => {
    const { store, acquire, complete } = setup({});
    expect(store.capabilities.maxOutcomeBytes).toBe(DEFAULT_MAX_OUTCOME_BYTES);
    expect(DEFAULT_MAX_OUTCOME_BYTES).toBe(8 * MiB);
    expect(DEFAULT_MAX_BYTES).toBe(128 * MiB);
    await acquire('big');
    const error = await complete('big', new Uint8Array(8 * MiB + 1)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OutcomeTooLargeError);
    expect((await store.get('big'))?.status).toBe('in_progress');
    expect(await complete('big', new Uint8Array(8 * MiB))).toEqual({ ok: true });
  });

  it('1 MB outcomes far past the budget: accounted bytes never exceed maxBytes, live outcomes stay', async () => {
    const maxBytes = 16 * MiB;
    const { clock, store, acquire, complete } = setup({ maxBytes });
    const oneMb = new Uint8Array(1_000_000).fill(7);
    const kept: string[] = [];
    let refusedOutcomes = 0;
    let refusedAcquires = 0;
    for (let i = 0; i < 200; i++) {
      if (i === 100) clock.advance(RETENTION_MS); // the first hundred's outcomes expire
      const key = `k${i}`;
      const acquired = await acquire(key).catch((e: unknown) => e);
      expect(store.bytes).toBeLessThanOrEqual(maxBytes);
      if (acquired instanceof StoreFullError) {
        refusedAcquires++;
        continue;
      }
      const done = await complete(key, oneMb).catch((e: unknown) => e);
      expect(store.bytes).toBeLessThanOrEqual(maxBytes);
      if (done instanceof StoreFullError) {
        refusedOutcomes++;
        // Nothing was written; the final marker core records instead always fits.
        expect((await store.get(key))?.status).toBe('in_progress');
        expect(await complete(key, new Uint8Array(1024).fill(1))).toEqual({ ok: true });
        expect(store.bytes).toBeLessThanOrEqual(maxBytes);
      } else {
        expect(done).toEqual({ ok: true });
        kept.push(key);
      }
    }
    // A full store refuses new keys (before anything runs) rather than outcomes (after): once
    // it has seen one outcome of 1 MB it keeps room for the next one (see outcome-headroom).
    expect(refusedOutcomes).toBe(0);
    expect(refusedAcquires).toBeGreaterThan(100);
    // Every outcome recorded within the current retention is still replayed, byte for byte.
    const live = kept.filter((key) => Number(key.slice(1)) >= 100);
    expect(live.length).toBeGreaterThan(0);
    for (const key of live) {
      const record = await store.get(key);
      expect(record?.status).toBe('completed');
      expect(record?.outcome?.byteLength).toBe(1_000_000);
    }
  });

  it('a final marker of at most 1 KiB always fits, even with the budget exhausted by leases', async () => {
    const { store, acquire, complete } = setup({ maxBytes: 64 * 1024 });
    const held: string[] = [];
    for (let i = 0; ; i++) {
      const result = await acquire(`lease-${i}`).catch((e: unknown) => e);
      if (result instanceof StoreFullError) break;
      held.push(`lease-${i}`);
    }
    expect(held.length).toBeGreaterThan(10);
    for (const key of held) {
      expect(await complete(key, new Uint8Array(1024))).toEqual({ ok: true });
      expect(store.bytes).toBeLessThanOrEqual(64 * 1024);
    }
    for (const key of held) expect((await store.get(key))?.status).toBe('completed');
  });

  it('under byte pressure frees expired records and tombstones, never a live outcome', async () => {
    const maxBytes = 4 * MiB;
    const { clock, store, acquire, complete } = setup({ maxBytes });
    const mb = new Uint8Array(MiB);
    await acquire('keep');
    expect(await complete('keep', mb)).toEqual({ ok: true });
    await acquire('short');
    await store.complete({ key: 'short', owner: 'o-short', outcome: mb, retentionMs: 10 });
    for (let i = 0; i < 500; i++) {
      await acquire(`t${i}`);
      await store.release({ key: `t${i}`, owner: `o-t${i}`, retentionMs: RETENTION_MS });
    }
    clock.advance(10);
    await acquire('a');
    expect(await complete('a', mb)).toEqual({ ok: true }); // room from 'short' (expired)
    await acquire('b');
    expect(await complete('b', mb)).toEqual({ ok: true });
    expect(store.bytes).toBeLessThanOrEqual(maxBytes);
    // No room beside 'keep', 'a' and 'b' for one more outcome like theirs: refused before it
    // runs (an outcome that fits no more is refused at complete: byte-budget's first test
    // before any outcome was seen, and outcome-headroom).
    await expect(acquire('c')).rejects.toBeInstanceOf(StoreFullError);
    expect(await store.get('c')).toBeUndefined();
    for (const key of ['keep', 'a', 'b']) expect((await store.get(key))?.status).toBe('completed');
    expect(await store.get('short')).toBeUndefined();
  });

  it('refuses budgets that cannot hold one record or one outcome', () => {
    expect(() => createMemoryStore({ maxBytes: 100 })).toThrow(/maxBytes/);
    expect(() => createMemoryStore({ maxBytes: 0 })).toThrow(/maxBytes/);
    expect(() => createMemoryStore({ maxBytes: MiB, maxOutcomeBytes: 2 * MiB })).toThrow(
      /maxOutcomeBytes/,
    );
    expect(() => createMemoryStore({ maxOutcomeBytes: 1.5 })).toThrow(/maxOutcomeBytes/);
    expect(createMemoryStore({ maxBytes: MiB }).capabilities.maxOutcomeBytes).toBe(MiB);
  });
});
