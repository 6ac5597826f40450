import { ManualClock, StoreFullError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

const RETENTION_MS = 60_000;
const LEASE_MS = 1_000;

function setup(maxEntries: number) {
  const clock = new ManualClock();
  const store = createMemoryStore({ clock, maxEntries, sweepIntervalMs: 0 });
  const acquire = (key: string, owner = `o-${key}`) =>
    store.acquire({ key, owner, fingerprint: 'fp', leaseMs: LEASE_MS, retentionMs: RETENTION_MS });
  const complete = (key: string, owner = `o-${key}`, bytes = [1]) =>
    store.complete({ key, owner, outcome: new Uint8Array(bytes), retentionMs: RETENTION_MS });
  const release = (key: string, owner = `o-${key}`) =>
    store.release({ key, owner, retentionMs: RETENTION_MS });
  return { clock, store, acquire, complete, release };
}

describe('eviction never drops live records', () => {
  it("a flood of another client's released tombstones never evicts a completed record", async () => {
    const { store, acquire, complete, release } = setup(10);
    expect((await acquire('tenant-a:charge')).kind).toBe('acquired');
    expect(await complete('tenant-a:charge', undefined, [42])).toEqual({ ok: true });
    // Tenant B sends many cheap keyed requests that end released (400s, 422s, failures).
    for (let i = 0; i < 1_000; i++) {
      expect((await acquire(`tenant-b:${i}`)).kind).toBe('acquired');
      expect(await release(`tenant-b:${i}`)).toEqual({ ok: true });
    }
    // Tenant A's retry still replays the charge instead of charging again.
    const retry = await acquire('tenant-a:charge', 'o-retry');
    expect(retry.kind).toBe('found');
    expect(retry.kind === 'found' && [...(retry.record.outcome ?? [])]).toEqual([42]);
    expect(store.size).toBeLessThanOrEqual(10);
  });

  it('when only live outcomes and leases remain, acquire fails with STORE_FULL and drops nothing', async () => {
    const { store, acquire, complete } = setup(4);
    await acquire('a');
    await complete('a');
    await acquire('b');
    await complete('b');
    await acquire('live-1');
    await acquire('live-2');
    const full = await acquire('flood').catch((e: unknown) => e);
    expect(full).toBeInstanceOf(StoreFullError);
    expect((full as StoreFullError).code).toBe('STORE_FULL');
    expect(await store.get('flood')).toBeUndefined();
    for (const key of ['a', 'b']) expect((await store.get(key))?.status).toBe('completed');
    for (const key of ['live-1', 'live-2'])
      expect((await store.get(key))?.status).toBe('in_progress');
    expect(store.size).toBe(4);
  });

  it('frees room in order: expired records, then tombstones, then passed leases', async () => {
    const { clock, store, acquire, complete, release } = setup(5);
    await acquire('old');
    await store.complete({
      key: 'old',
      owner: 'o-old',
      outcome: new Uint8Array([1]),
      retentionMs: 10,
    });
    await acquire('tomb');
    await release('tomb');
    await acquire('stale'); // its lease passes below, nobody takes it over
    await acquire('done');
    await complete('done');
    clock.advance(LEASE_MS); // 'old' is past retention, 'stale' past its lease
    await acquire('live');

    expect((await acquire('n1')).kind).toBe('acquired');
    expect(store.size).toBe(5);
    expect(await store.get('old')).toBeUndefined();
    expect((await store.get('tomb'))?.status).toBe('released');
    expect((await acquire('n2')).kind).toBe('acquired');
    expect(await store.get('tomb')).toBeUndefined();
    expect((await store.get('stale'))?.status).toBe('in_progress');
    expect((await acquire('n3')).kind).toBe('acquired');
    expect(await store.get('stale')).toBeUndefined();
    await expect(acquire('n4')).rejects.toBeInstanceOf(StoreFullError);
    expect((await store.get('done'))?.status).toBe('completed');
    expect((await store.get('live'))?.status).toBe('in_progress');
  });

  it('a completed record is droppable once its retention passed, a lease once lease and retention passed', async () => {
    const { clock, store, acquire, complete } = setup(2);
    await acquire('done');
    await complete('done');
    await acquire('live');
    await expect(acquire('x')).rejects.toBeInstanceOf(StoreFullError);
    clock.advance(RETENTION_MS);
    expect((await acquire('x')).kind).toBe('acquired'); // 'done' expired
    expect(await store.get('done')).toBeUndefined();
    expect((await store.get('live'))?.status).toBe('in_progress');
  });

  it('keeps fences growing when tombstones are evicted', async () => {
    const { store, acquire, release } = setup(1);
    await acquire('a');
    await release('a');
    await acquire('b'); // evicts a's tombstone
    await release('b');
    const again = await acquire('a', 'o-a2');
    expect(again.kind === 'acquired' && again.fence).toBeGreaterThan(1);
    expect(store.size).toBe(1);
  });

  it('a long flood over a store half full of live outcomes keeps every one of them', async () => {
    const { store, acquire, complete, release } = setup(20_000);
    for (let i = 0; i < 10_000; i++) {
      await acquire(`done-${i}`);
      await complete(`done-${i}`);
    }
    for (let i = 0; i < 30_000; i++) {
      await acquire(`t-${i}`);
      await release(`t-${i}`);
    }
    expect(store.size).toBe(20_000);
    for (let i = 0; i < 10_000; i++)
      expect((await store.get(`done-${i}`))?.status).toBe('completed');
  });
});
