/**
 * Mutation audit (store-redis): "Expiry is decided by the scripts on every call (`now >=
 * expiresAt`), never left to Redis's key expiry alone" (README, Clock; store contract rule 3).
 * Redis drops a record key the millisecond its retention ends, so a script that skipped its
 * own expiry check was hidden by the key expiry in every test that waited for a retention to
 * pass; only `get` and `acquire` were tested on a key that outlived its deadline. Here the
 * record's header deadline is moved into the past while the key stays (as in the moment
 * between the two, or a key someone PERSISTed), and every other call must treat the record as
 * gone: the owner's writes, inspect, forceRelease and delete.
 */
import { describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import { owner, standaloneSession } from './mutaudit-helpers.js';
import { redisNow, setRawExpiresAt } from './targets.js';

const LEASE = 30_000;
const RETENTION = 60_000;
const NOT_OWNER = { ok: false, reason: 'not_owner' };

const session = standaloneSession();
let store: RedisStore;

/** Acquires `key` for a fresh owner, then moves its retention deadline 1 ms into the past. */
async function expiredInProgress(key: string): Promise<string> {
  const who = owner();
  const got = await store.acquire({
    key,
    fingerprint: 'fp',
    owner: who,
    leaseMs: LEASE,
    retentionMs: RETENTION,
  });
  expect(got.kind).toBe('acquired');
  await setRawExpiresAt(session.raw, store.redisKey(key), (await redisNow(session.raw)) - 1);
  return who;
}

describe('mutaudit: an expired record whose key Redis still holds', () => {
  it('its owner can no longer complete, extend or release it, and nothing changes', async () => {
    store = createRedisStore({ client: session.client, keyPrefix: session.prefix() });
    const who = await expiredInProgress('k');
    const before = (await session.raw.getBuffer(store.redisKey('k')))?.toString('hex');
    const w = { key: 'k', owner: who, retentionMs: RETENTION };
    expect(await store.extend({ ...w, leaseMs: LEASE })).toEqual(NOT_OWNER);
    expect(await store.complete({ ...w, outcome: new Uint8Array([1]) })).toEqual(NOT_OWNER);
    expect(await store.release(w)).toEqual(NOT_OWNER);
    expect((await session.raw.getBuffer(store.redisKey('k')))?.toString('hex')).toBe(before);
    // The next acquisition is a fresh one, above the expired record's fence.
    expect(
      await store.acquire({
        key: 'k',
        fingerprint: 'fp',
        owner: owner(),
        leaseMs: LEASE,
        retentionMs: RETENTION,
      }),
    ).toMatchObject({ kind: 'acquired', fence: 2, takeover: false });
  });

  for (const fenceMemoryMs of [86_400_000, 0]) {
    it(`the admin calls see no record: inspect, forceRelease and delete (fenceMemoryMs ${fenceMemoryMs})`, async () => {
      store = createRedisStore({
        client: session.client,
        keyPrefix: session.prefix(),
        fenceMemoryMs,
      });
      await expiredInProgress('k');
      const before = (await session.raw.getBuffer(store.redisKey('k')))?.toString('hex');
      expect(await store.get('k')).toBeUndefined();
      expect(await store.admin.inspect('k')).toBeUndefined();
      expect(await store.admin.forceRelease('k')).toEqual({ ok: false, reason: 'not_found' });
      expect((await session.raw.getBuffer(store.redisKey('k')))?.toString('hex')).toBe(before);
      expect(await store.admin.delete('k')).toEqual({ deleted: false });
    });
  }
});
