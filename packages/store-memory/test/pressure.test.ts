import { randomBytes, randomUUID } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ManualClock, StoreFullError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

const MiB = 1024 * 1024;
const RETENTION_MS = 86_400_000;

function heapAfterCollection(): number {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

describe('a full store under churn', () => {
  const floodOf = (store: ReturnType<typeof createMemoryStore>) => async () => {
    const key = randomBytes(32).toString('base64url');
    const owner = randomUUID();
    const fingerprint = randomBytes(32).toString('base64url');
    await store.acquire({ key, owner, fingerprint, leaseMs: 30_000, retentionMs: RETENTION_MS });
    await store.release({ key, owner, retentionMs: RETENTION_MS });
  };

  it('a flood of released keys fills the store with remnants, then STORE_FULL; the heap stays near maxBytes', async () => {
    const maxBytes = 16 * MiB;
    const clock = new ManualClock();
    const before = heapAfterCollection();
    const store = createMemoryStore({ clock, maxBytes, sweepIntervalMs: 0 });
    const flood = floodOf(store);
    let admitted = 0;
    let refused: unknown;
    while (refused === undefined && admitted < 200_000) {
      try {
        await flood();
        admitted++;
      } catch (error) {
        refused = error;
      }
    }
    expect(refused).toBeInstanceOf(StoreFullError);
    // About three times the tombstones that fit: each evicted one leaves a third of its bytes.
    const tombstones = Math.floor(maxBytes / 1_000);
    expect(admitted).toBeGreaterThan(2 * tombstones);
    expect(store.bytes).toBeLessThanOrEqual(maxBytes);
    const grown = heapAfterCollection() - before;
    // Accounted bytes are an estimate of the real cost (scripts/record-overhead.mjs); evicted
    // records left in the eviction queues used to double it.
    expect(grown).toBeLessThan(1.25 * maxBytes);
    // The refusal ends by itself when the retentions pass.
    clock.advance(RETENTION_MS + 30_000);
    await flood();
  });

  it('with forgetOriginsWhenFull, a flood of released keys turns over for ever and the heap stays near maxBytes', async () => {
    const maxBytes = 8 * MiB;
    const clock = new ManualClock();
    const before = heapAfterCollection();
    const store = createMemoryStore({
      clock,
      maxBytes,
      sweepIntervalMs: 0,
      forgetOriginsWhenFull: true,
    });
    const flood = floodOf(store);
    let full = 0;
    while (store.size > full || full === 0) {
      full = store.size;
      await flood();
    }
    // Every new key now evicts the oldest tombstone, and remnants fill the bytes until the
    // oldest go: several store-fulls of turnover, none refused.
    for (let i = 0; i < 2 * Math.floor(maxBytes / 300); i++) await flood();
    expect(store.bytes).toBeLessThanOrEqual(maxBytes);
    const grown = heapAfterCollection() - before;
    expect(grown).toBeLessThan(1.25 * maxBytes);
  });

  it('an outcome that could never fit is refused without evicting anything', async () => {
    const maxBytes = 64 * 1024;
    const clock = new ManualClock();
    const store = createMemoryStore({ clock, maxBytes, sweepIntervalMs: 0 });
    expect(store.capabilities.maxOutcomeBytes).toBe(maxBytes);
    const input = { fingerprint: 'fp', leaseMs: 1_000, retentionMs: RETENTION_MS };
    await store.acquire({ ...input, key: 'tomb', owner: 'a' });
    await store.release({ key: 'tomb', owner: 'a', retentionMs: RETENTION_MS });
    await store.acquire({ ...input, key: 'slow', owner: 'b' });
    await store.acquire({ ...input, key: 'big', owner: 'c' });
    clock.advance(1_000); // the leases of 'slow' and 'big' have passed; nobody took them over
    const size = store.size;
    const bytes = store.bytes;
    const outcome = new Uint8Array(maxBytes);
    await expect(
      store.complete({ key: 'big', owner: 'c', outcome, retentionMs: RETENTION_MS }),
    ).rejects.toBeInstanceOf(StoreFullError);
    expect(store.size).toBe(size);
    expect(store.bytes).toBe(bytes);
    // The slow owner whose lease passed can still record its outcome.
    expect(
      await store.complete({
        key: 'slow',
        owner: 'b',
        outcome: new Uint8Array(9),
        retentionMs: RETENTION_MS,
      }),
    ).toEqual({ ok: true });
    expect((await store.get('tomb'))?.status).toBe('released');
  });
});

describe('a takeover refused for room', () => {
  it('leaves the passed lease it could not replace, so its owner can still record the outcome', async () => {
    const clock = new ManualClock();
    const maxBytes = 64 * 1024;
    const store = createMemoryStore({ clock, maxBytes, sweepIntervalMs: 0 });
    const input = { fingerprint: 'fp', leaseMs: 1_000, retentionMs: RETENTION_MS };
    await store.acquire({ ...input, key: 'slow', owner: 'a' });
    // Fill the rest with completed records within retention (never evicted).
    for (let i = 0; ; i++) {
      const key = `done-${i}`;
      const got = await store.acquire({ ...input, key, owner: key }).catch((e: unknown) => e);
      if (got instanceof StoreFullError) break;
      const outcome = new Uint8Array(1024);
      await store.complete({ key, owner: key, outcome, retentionMs: RETENTION_MS });
    }
    clock.advance(1_000); // 'slow' has passed its lease; nobody took it over yet
    // A retry with longer strings needs about 4 KB more than the passed lease frees.
    const long = 'ж'.repeat(1_024);
    const retry = { ...input, key: 'slow', owner: long, fingerprint: long };
    expect(maxBytes - store.bytes).toBeLessThan(4_000);
    const size = store.size;
    await expect(store.acquire(retry)).rejects.toBeInstanceOf(StoreFullError);
    expect(store.size).toBe(size);
    expect(await store.get('slow')).toMatchObject({ status: 'in_progress', owner: 'a', fence: 1 });
    const outcome = new Uint8Array([1]);
    expect(
      await store.complete({ key: 'slow', owner: 'a', outcome, retentionMs: RETENTION_MS }),
    ).toEqual({ ok: true });
  });
});
