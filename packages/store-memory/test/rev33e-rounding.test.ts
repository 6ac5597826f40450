import { createIdempotency, deriveStorageKey } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

/** A clock the test sets, reading fractions of a ms (as the store's default clock does). */
function fractionalClock(start: number) {
  const clock = { t: start, now: () => clock.t };
  return clock;
}

const acquireInput = (key: string, owner: string, leaseMs = 100) => ({
  key,
  fingerprint: '',
  owner,
  leaseMs,
  retentionMs: 5_000,
});

describe('memory store with whole-ms readings of a fractional clock (rev33e)', () => {
  it('fences: a fresh key starts at 1, the acquisition after a release is 2 (the tombstone keeps fence 1), and a fresh key then starts above the table-wide floor', async () => {
    const store = createMemoryStore();
    const first = await store.acquire(acquireInput('a', 'o1'));
    expect(first).toMatchObject({ kind: 'acquired', fence: 1 });
    expect(await store.release({ key: 'a', owner: 'o1', retentionMs: 5_000 })).toEqual({
      ok: true,
    });
    expect((await store.get('a'))?.fence).toBe(1);
    // The "fence 2" the edge33 conformance check saw: its late acquire landed (fence 1), core
    // gave it back (a released tombstone keeping fence 1), then the check acquired the key
    // itself: old fence + 1 = 2, as the contract says. Not a bug.
    expect(await store.acquire(acquireInput('a', 'o2'))).toMatchObject({
      kind: 'acquired',
      fence: 2,
    });
    // A fresh key's first fence is the store's fence floor + 1, and the floor is table-wide:
    // replacing the tombstone of 'a' (remove() in the acquire) raised it to 1, so 'b' starts
    // at 2. Allowed (fences only grow per key; a fresh key is promised no particular fence)
    // and harmless; it is why fences on one memory store are not 1 for every fresh key.
    expect(await store.acquire(acquireInput('b', 'o3'))).toMatchObject({
      kind: 'acquired',
      fence: 2,
    });
    await store.close?.();
  });

  it('fences stay strictly increasing through acquire, release, lapse and takeover on a fractional clock', async () => {
    const clock = fractionalClock(1_000.3);
    const store = createMemoryStore({ clock });
    let last = 0;
    for (let i = 0; i < 20; i++) {
      const got = await store.acquire(acquireInput('k', `o${i}`, 10));
      expect(got.kind).toBe('acquired');
      if (got.kind !== 'acquired') return;
      expect(got.fence).toBeGreaterThan(last);
      last = got.fence;
      if (i % 2 === 0) await store.release({ key: 'k', owner: `o${i}`, retentionMs: 5_000 });
      else clock.t += 10.45; // the lease lapses: the next acquisition is a takeover
    }
    await store.close?.();
  });

  it('through core: begin on a fresh key reports fence 1; after its release the next begin reports 2', async () => {
    const store = createMemoryStore();
    const idem = createIdempotency<string>({ store, heartbeatMs: false });
    const first = await idem.begin({ key: 'k', scope: 's' });
    expect(first.kind).toBe('acquired');
    if (first.kind !== 'acquired') return;
    expect(first.execution.fence).toBe(1);
    await first.execution.release();
    const second = await idem.begin({ key: 'k', scope: 's' });
    if (second.kind !== 'acquired') throw new Error(`expected acquired, got ${second.kind}`);
    expect(second.execution.fence).toBe(2);
    await second.execution.release();
    expect((await store.get(deriveStorageKey('s', 'k')))?.fence).toBe(2);
    await idem.drain(1_000);
    await store.close?.();
  });

  it('a lease is judged live until its whole-ms deadline: a reading of deadline - 0.1 still sees it held', async () => {
    const clock = fractionalClock(1_000.9);
    const store = createMemoryStore({ clock });
    const held = await store.acquire(acquireInput('k', 'holder'));
    expect(held.kind).toBe('acquired');
    if (held.kind !== 'acquired') return;
    clock.t = held.leaseUntil - 0.1;
    expect((await store.acquire(acquireInput('k', 'other'))).kind).toBe('found');
    await store.close?.();
  });

  // FINDING (rev33e, low): the store reads its clock rounded down (edge33), so an acquire sent
  // at a reading of 1000.9 writes leaseUntil 1000 + leaseMs: the lease ends up to 1 ms before
  // send + leaseMs, the point core's LeaseKeeper takes as a safe lower bound of the store's
  // lease ("The store started the lease no earlier than the call was sent"). In that last
  // sub-ms another owner can take the key over while the holder's watchdog has not fired
  // (it matters only without a renewal: heartbeatMs false, or renewals failing). Before
  // edge33 the memory store wrote exact fractional deadlines; PostgreSQL (floor of
  // clock_timestamp) has always had this sub-ms shortfall. The same holds for retention
  // (expiresAt = floor(t) + retentionMs). Fix: write deadlines from the reading rounded up
  // (judge with it rounded down), or let core's estimate allow 1 ms for whole-ms store clocks.
  it.fails('a lease lasts at least leaseMs from the reading the acquire was sent at (core counts its lease from the send)', async () => {
    const clock = fractionalClock(1_000.9);
    const store = createMemoryStore({ clock });
    const sentAt = clock.now();
    await store.acquire(acquireInput('k', 'holder', 100));
    clock.t = sentAt + 100 - 0.4; // 1100.5: before the holder's estimate of 1100.9
    expect((await store.acquire(acquireInput('k', 'other', 100))).kind).toBe('found');
    await store.close?.();
  });
});
