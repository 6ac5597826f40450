import { ManualClock } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

const LEASE_MS = 1_000;
const RETENTION_MS = 10_000;
const notOwner = { ok: false, reason: 'not_owner' };

function setup() {
  const clock = new ManualClock();
  const store = createMemoryStore({ clock, sweepIntervalMs: 0 });
  const acquire = (owner: string, leaseMs = LEASE_MS) =>
    store.acquire({ key: 'k', owner, fingerprint: 'fp', leaseMs, retentionMs: RETENTION_MS });
  const complete = (owner: string, bytes: number[]) =>
    store.complete({ key: 'k', owner, outcome: new Uint8Array(bytes), retentionMs: RETENTION_MS });
  return { clock, store, acquire, complete };
}

describe('redelivered calls (the answer was lost, the client library sent the call again)', () => {
  it('an acquire that finds its own live lease is its own acquisition: same fence, lease renewed', async () => {
    const { clock, store, acquire } = setup();
    const first = await acquire('me');
    expect(first).toMatchObject({ kind: 'acquired', fence: 1, takeover: false });
    clock.advance(400);
    const again = await acquire('me', 2_000);
    expect(again).toEqual({
      kind: 'acquired',
      fence: 1,
      takeover: false,
      origin: 'me',
      leaseUntil: clock.now() + 2_000,
    });
    const record = await store.get('k');
    expect(record).toMatchObject({ status: 'in_progress', owner: 'me', fence: 1 });
    expect(record?.leaseUntil).toBe(clock.now() + 2_000);
    expect(record?.expiresAt).toBeGreaterThanOrEqual(clock.now() + 2_000 + RETENTION_MS);
    // Another owner still finds the lease live.
    expect((await acquire('other')).kind).toBe('found');
  });

  it('an acquire that finds its own passed lease (nobody took it over) renews it without a new fence', async () => {
    const { clock, store, acquire } = setup();
    await acquire('me');
    clock.advance(LEASE_MS + 5);
    expect(await acquire('me')).toEqual({
      kind: 'acquired',
      fence: 1,
      takeover: false,
      origin: 'me',
      leaseUntil: clock.now() + LEASE_MS,
    });
    expect((await store.get('k'))?.leaseUntil).toBe(clock.now() + LEASE_MS);
  });

  it('after a takeover the old owner’s redelivered acquire is not its acquisition', async () => {
    const { clock, acquire } = setup();
    await acquire('me');
    clock.advance(LEASE_MS);
    expect(await acquire('newer')).toMatchObject({ kind: 'acquired', fence: 2, takeover: true });
    expect(await acquire('me')).toMatchObject({ kind: 'found', record: { owner: 'newer' } });
  });

  it('a complete that finds its own completion with the same bytes succeeds and changes nothing', async () => {
    const { clock, store, acquire, complete } = setup();
    await acquire('me');
    expect(await complete('me', [1, 2, 3])).toEqual({ ok: true });
    const before = await store.get('k');
    clock.advance(500);
    expect(await complete('me', [1, 2, 3])).toEqual({ ok: true });
    expect(await store.get('k')).toEqual(before);
  });

  it('a complete of the same owner with other bytes is not_owner and changes nothing', async () => {
    const { store, acquire, complete } = setup();
    await acquire('me');
    await complete('me', [1, 2, 3]);
    const before = await store.get('k');
    expect(await complete('me', [1, 2, 4])).toEqual(notOwner);
    expect(await complete('me', [1, 2])).toEqual(notOwner);
    expect(await complete('someone', [1, 2, 3])).toEqual(notOwner);
    expect(await store.get('k')).toEqual(before);
  });

  it('a release that finds its own tombstone succeeds; anyone else’s is not_owner', async () => {
    const { store, acquire } = setup();
    await acquire('me');
    const release = (owner: string) =>
      store.release({ key: 'k', owner, retentionMs: RETENTION_MS });
    expect(await release('me')).toEqual({ ok: true });
    const before = await store.get('k');
    expect(await release('me')).toEqual({ ok: true });
    expect(await release('someone')).toEqual(notOwner);
    expect(await store.get('k')).toEqual(before);
  });
});
