/**
 * Mutation audit (store-redis): "not_owner means nothing was changed" includes the keys'
 * expiries. The existing checks compare the record's bytes before and after a refused write;
 * a script that moved the record key's expiry (or the fence memory's) before its owner check
 * passed them all. Here every refused write is checked against a full snapshot of the key:
 * the record's bytes, both keys' PEXPIRETIME, and no key created where there was none.
 */
import { describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import { owner, standaloneSession } from './mutaudit-helpers.js';

const LEASE = 30_000;
const RETENTION = 60_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const NOT_OWNER = { ok: false, reason: 'not_owner' };

const session = standaloneSession();

/** Everything Redis holds for one storage key. */
async function snapshot(store: RedisStore, key: string) {
  const record = store.redisKey(key);
  const fence = store.fenceKey(key);
  return {
    bytes: (await session.raw.getBuffer(record))?.toString('hex') ?? null,
    recordExpiry: Number(await session.raw.call('PEXPIRETIME', record)),
    fence: await session.raw.get(fence),
    fenceExpiry: Number(await session.raw.call('PEXPIRETIME', fence)),
  };
}

/** complete, release and extend by `who`: each answers not_owner and changes nothing. */
async function expectRefused(store: RedisStore, key: string, who: string, what: string) {
  const before = await snapshot(store, key);
  const w = { key, owner: who, retentionMs: RETENTION * 10 };
  expect(await store.extend({ ...w, leaseMs: LEASE * 10 }), `${what}: extend`).toEqual(NOT_OWNER);
  expect(await snapshot(store, key), `${what}: after extend`).toEqual(before);
  expect(
    await store.complete({ ...w, outcome: new Uint8Array([9, 9]) }),
    `${what}: complete`,
  ).toEqual(NOT_OWNER);
  expect(await snapshot(store, key), `${what}: after complete`).toEqual(before);
  expect(await store.release(w), `${what}: release`).toEqual(NOT_OWNER);
  expect(await snapshot(store, key), `${what}: after release`).toEqual(before);
}

describe('mutaudit: refused writes change nothing, expiries included', () => {
  for (const fenceMemoryMs of [86_400_000, 0]) {
    it(`another owner, a stale owner after a takeover, and writes to a missing key (fenceMemoryMs ${fenceMemoryMs})`, async () => {
      const store = createRedisStore({
        client: session.client,
        keyPrefix: session.prefix(),
        fenceMemoryMs,
      });
      const input = (who: string, leaseMs = LEASE) => ({
        key: 'k',
        fingerprint: 'fp',
        owner: who,
        leaseMs,
        retentionMs: RETENTION,
      });

      // No record at all: nothing may be created.
      await expectRefused(store, 'missing', owner(), 'missing key');
      expect(await snapshot(store, 'missing')).toEqual({
        bytes: null,
        recordExpiry: -2,
        fence: null,
        fenceExpiry: -2,
      });

      // A live in-progress record of another owner.
      const a = owner();
      expect((await store.acquire(input(a, 200))).kind).toBe('acquired');
      await expectRefused(store, 'k', owner(), 'live lease of another owner');

      // Taken over after its lease passed: the old owner is a stranger now.
      await sleep(250);
      const b = owner();
      expect(await store.acquire(input(b))).toMatchObject({ kind: 'acquired', takeover: true });
      await expectRefused(store, 'k', a, 'stale owner after a takeover');

      // Completed by b: another owner's writes, and a's.
      expect(
        await store.complete({
          key: 'k',
          owner: b,
          outcome: new Uint8Array([1]),
          retentionMs: RETENTION,
        }),
      ).toEqual({ ok: true });
      await expectRefused(store, 'k', a, 'completed record, stale owner');
      await expectRefused(store, 'k', owner(), 'completed record, stranger');
    });
  }

  it('a released tombstone: writes by a stranger change nothing', async () => {
    const store = createRedisStore({ client: session.client, keyPrefix: session.prefix() });
    const a = owner();
    await store.acquire({
      key: 'k',
      fingerprint: 'fp',
      owner: a,
      leaseMs: LEASE,
      retentionMs: RETENTION,
    });
    expect(await store.release({ key: 'k', owner: a, retentionMs: RETENTION })).toEqual({
      ok: true,
    });
    await expectRefused(store, 'k', owner(), 'tombstone, stranger');
  });
});
