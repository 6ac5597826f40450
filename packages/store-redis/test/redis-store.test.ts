import { randomBytes } from 'node:crypto';
import { OutcomeTooLargeError, StoreUnavailableError } from '@idem/core';
import { Cluster, Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createRedisStore,
  type RedisStore,
  recommendedRedisClusterOptions,
  recommendedRedisOptions,
} from '../src/index.js';
import {
  type Client,
  clusterPorts,
  deletePrefix,
  keyGoneAt,
  REDIS_URL,
  randomPrefix,
  rawRecord,
  redisNow,
  setRawExpiresAt,
  skipTarget,
  targets,
} from './targets.js';

const LEASE = 30_000;
const RETENTION = 60_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const owner = () => randomBytes(16).toString('base64url');

/** Every byte value, in an order that is not valid UTF-8. */
function binaryOutcome(): Uint8Array {
  const out = new Uint8Array(512);
  for (let i = 0; i < out.length; i++) out[i] = (255 - i) & 0xff;
  return out;
}

for (const target of targets) {
  describe.skipIf(skipTarget(target))(`createRedisStore on ${target.name}`, () => {
    let client: Client;
    let raw: Client;
    let prefix = randomPrefix();
    let store: RedisStore;

    beforeAll(async () => {
      client = await target.connect();
      raw = await target.connect();
    });
    afterAll(async () => {
      client?.disconnect();
      raw?.disconnect();
    });
    afterEach(async () => {
      await deletePrefix(raw, prefix);
    });

    /** Acquires key `k` of the current store with the default lease and retention. */
    const acquireK = (who: string, fingerprint: string) =>
      store.acquire({ key: 'k', fingerprint, owner: who, leaseMs: LEASE, retentionMs: RETENTION });

    // A new prefix and store per test: no test sees another's keys.
    const fresh = () => {
      prefix = randomPrefix();
      store = createRedisStore({ client, keyPrefix: prefix });
      return store;
    };

    it('acquires a free key and writes owner, fence and Redis-clock deadlines', async () => {
      fresh();
      const me = owner();
      const before = await redisNow(raw);
      const result = await store.acquire({
        key: 'k1',
        fingerprint: 'fp-1',
        owner: me,
        leaseMs: LEASE,
        retentionMs: RETENTION,
      });
      const after = await redisNow(raw);
      // A free key begins a logical request: its origin is the acquisition's own owner.
      expect(result).toMatchObject({ kind: 'acquired', fence: 1, takeover: false, origin: me });
      if (result.kind !== 'acquired') throw new Error('unreachable');
      expect(result.leaseUntil).toBeGreaterThanOrEqual(before + LEASE);
      expect(result.leaseUntil).toBeLessThanOrEqual(after + LEASE);

      const record = await rawRecord(raw, store.redisKey('k1'));
      expect(record).toEqual({
        status: 'in_progress',
        fingerprint: 'fp-1',
        owner: me,
        fence: 1,
        origin: me,
        leaseUntil: result.leaseUntil,
        expiresAt: result.leaseUntil + RETENTION,
      });
      // Redis frees the key itself at the record's retention deadline.
      expect(await keyGoneAt(raw, store.redisKey('k1'))).toBe(result.leaseUntil + RETENTION);
      expect(await store.get('k1')).toEqual(record);
    });

    it('returns the live in-progress record it found, by the Redis clock, and changes nothing', async () => {
      fresh();
      const first = owner();
      await acquireK(first, 'fp');
      const before = await rawRecord(raw, store.redisKey('k'));
      const again = await acquireK(owner(), 'other');
      expect(again).toEqual({ kind: 'found', record: before, now: expect.any(Number) });
      if (again.kind !== 'found') throw new Error('unreachable');
      expect(Math.abs(again.now - (await redisNow(raw)))).toBeLessThan(1_000);
      expect(await rawRecord(raw, store.redisKey('k'))).toEqual(before);
    });

    it('completes with binary bytes stored raw, replays them, and a non-owner complete changes nothing', async () => {
      fresh();
      const me = owner();
      const key = store.redisKey('k');
      await acquireK(me, 'fp');
      const before = await rawRecord(raw, key);
      const ttlBefore = await keyGoneAt(raw, key);

      const stranger = await store.complete({
        key: 'k',
        owner: owner(),
        outcome: new Uint8Array([1, 2, 3]),
        retentionMs: RETENTION,
      });
      expect(stranger).toEqual({ ok: false, reason: 'not_owner' });
      expect(await rawRecord(raw, key)).toEqual(before);
      expect(await keyGoneAt(raw, key)).toBe(ttlBefore);

      const outcome = binaryOutcome();
      const t0 = await redisNow(raw);
      expect(
        await store.complete({ key: 'k', owner: me, outcome, retentionMs: RETENTION }),
      ).toEqual({ ok: true });
      const t1 = await redisNow(raw);
      const done = await rawRecord(raw, key);
      expect(done).toMatchObject({ status: 'completed', owner: me, fence: 1, fingerprint: 'fp' });
      expect(done?.outcome).toEqual(outcome);
      // Raw bytes, no base64: the value is the 42-byte header, owner, fingerprint, outcome.
      expect(await raw.strlen(key)).toBe(42 + me.length + 'fp'.length + outcome.length);
      expect(done!.expiresAt).toBeGreaterThanOrEqual(t0 + RETENTION);
      expect(done!.expiresAt).toBeLessThanOrEqual(t1 + RETENTION);
      expect(await keyGoneAt(raw, key)).toBe(done!.expiresAt);

      const replay = await acquireK(owner(), 'fp');
      expect(replay.kind).toBe('found');
      if (replay.kind !== 'found') throw new Error('unreachable');
      expect(replay.record).toEqual(done);
      expect(replay.record.outcome).toBeInstanceOf(Uint8Array);
      expect(replay.record.outcome).toEqual(outcome);
    });

    it('cannot double-apply a resent script: a second complete or release by the same owner changes nothing', async () => {
      fresh();
      const me = owner();
      const key = store.redisKey('k');
      await acquireK(me, 'fp');
      await store.complete({
        key: 'k',
        owner: me,
        outcome: new Uint8Array([7]),
        retentionMs: RETENTION,
      });
      const completed = await rawRecord(raw, key);
      expect(
        await store.complete({
          key: 'k',
          owner: me,
          outcome: new Uint8Array([8]),
          retentionMs: RETENTION,
        }),
      ).toEqual({
        ok: false,
        reason: 'not_owner',
      });
      expect(await store.release({ key: 'k', owner: me, retentionMs: RETENTION })).toEqual({
        ok: false,
        reason: 'not_owner',
      });
      expect(
        await store.extend({ key: 'k', owner: me, leaseMs: LEASE, retentionMs: RETENTION }),
      ).toEqual({
        ok: false,
        reason: 'not_owner',
      });
      expect(await rawRecord(raw, key)).toEqual(completed);
    });

    it('releases to a tombstone that keeps the fence; the next acquire gets fence + 1', async () => {
      fresh();
      const me = owner();
      const key = store.redisKey('k');
      await acquireK(me, 'fp');
      expect(await store.release({ key: 'k', owner: owner(), retentionMs: RETENTION })).toEqual({
        ok: false,
        reason: 'not_owner',
      });
      expect(await store.release({ key: 'k', owner: me, retentionMs: RETENTION })).toEqual({
        ok: true,
      });
      const tomb = await rawRecord(raw, key);
      expect(tomb).toMatchObject({ status: 'released', owner: me, fence: 1 });
      expect(tomb!.expiresAt - tomb!.leaseUntil).toBe(RETENTION);
      expect(await keyGoneAt(raw, key)).toBe(tomb!.expiresAt);

      const next = owner();
      const again = await acquireK(next, 'fp2');
      expect(again).toMatchObject({ kind: 'acquired', fence: 2, takeover: false });
      expect(await rawRecord(raw, key)).toMatchObject({
        status: 'in_progress',
        owner: next,
        fence: 2,
        fingerprint: 'fp2',
      });
    });

    it('takes over a passed lease (by the Redis clock) and the stale owner cannot write any more', async () => {
      fresh();
      const stale = owner();
      const key = store.redisKey('k');
      await store.acquire({
        key: 'k',
        fingerprint: 'fp',
        owner: stale,
        leaseMs: 150,
        retentionMs: RETENTION,
      });
      await sleep(250);
      // Lease passed but nobody took over yet: the owner may still extend.
      const renewed = await store.extend({
        key: 'k',
        owner: stale,
        leaseMs: 150,
        retentionMs: RETENTION,
      });
      expect(renewed.ok).toBe(true);
      await sleep(250);
      const fresher = owner();
      const taken = await acquireK(fresher, 'fp');
      expect(taken).toMatchObject({ kind: 'acquired', fence: 2, takeover: true });
      const current = await rawRecord(raw, key);
      expect(current).toMatchObject({ status: 'in_progress', owner: fresher, fence: 2 });

      for (const write of [
        store.complete({
          key: 'k',
          owner: stale,
          outcome: new Uint8Array([9]),
          retentionMs: RETENTION,
        }),
        store.release({ key: 'k', owner: stale, retentionMs: RETENTION }),
        store.extend({ key: 'k', owner: stale, leaseMs: LEASE, retentionMs: RETENTION }),
      ]) {
        expect(await write).toEqual({ ok: false, reason: 'not_owner' });
      }
      expect(await rawRecord(raw, key)).toEqual(current);
    });

    it('extends the lease from the Redis clock and moves the key expiry with it', async () => {
      fresh();
      const me = owner();
      const key = store.redisKey('k');
      const acquired = await store.acquire({
        key: 'k',
        fingerprint: 'fp',
        owner: me,
        leaseMs: 1_000,
        retentionMs: RETENTION,
      });
      if (acquired.kind !== 'acquired') throw new Error('expected acquisition');
      await sleep(20);
      const extended = await store.extend({
        key: 'k',
        owner: me,
        leaseMs: LEASE,
        retentionMs: RETENTION,
      });
      expect(extended.ok).toBe(true);
      if (!extended.ok) throw new Error('unreachable');
      expect(extended.leaseUntil).toBeGreaterThan(acquired.leaseUntil);
      const record = await rawRecord(raw, key);
      expect(record).toMatchObject({
        leaseUntil: extended.leaseUntil,
        expiresAt: extended.leaseUntil! + RETENTION,
        fence: 1,
      });
      expect(await keyGoneAt(raw, key)).toBe(extended.leaseUntil! + RETENTION);
    });

    it('decides expiry itself: a record past expiresAt is gone even while the key still exists', async () => {
      fresh();
      const key = store.redisKey('k');
      await acquireK(owner(), 'fp');
      await store.complete({
        key: 'k',
        owner: (await rawRecord(raw, key))!.owner,
        outcome: new Uint8Array([1]),
        retentionMs: RETENTION,
      });
      // Simulate a key that Redis has not freed yet although its retention passed.
      await setRawExpiresAt(raw, key, (await redisNow(raw)) - 1);
      expect(await store.get('k')).toBeUndefined();
      const again = await acquireK(owner(), 'fp');
      expect(again).toMatchObject({ kind: 'acquired', fence: 2, takeover: false });
      const record = await rawRecord(raw, key);
      expect(record?.status).toBe('in_progress');
      expect(record?.outcome).toBeUndefined();
    });

    it('stores a completed record at its size: no room left over from building it', async () => {
      fresh();
      const me = owner();
      const key = store.redisKey('k');
      await acquireK(me, 'f'.repeat(64));
      const outcome = new Uint8Array(1024).fill(7);
      await store.complete({ key: 'k', owner: me, outcome, retentionMs: RETENTION });
      const length = await raw.strlen(key);
      expect(length).toBe(42 + me.length + 64 + outcome.length);
      // Allocator size classes and the key's own overhead on top of the value, no more: an
      // APPENDed outcome left Redis's growth room (2,696 bytes for this record, not 1,416).
      const usage = Number(await raw.call('MEMORY', 'USAGE', key, 'SAMPLES', '0'));
      expect(usage).toBeLessThan(length * 1.5);
    });

    it('remembers the fence past expiry in the same hash slot, for fenceMemoryMs', async () => {
      fresh();
      const me = owner();
      await acquireK(me, 'fp');
      await store.complete({ key: 'k', owner: me, outcome: new Uint8Array([1]), retentionMs: 200 });
      const done = await rawRecord(raw, store.redisKey('k'));
      // The fence memory outlives the record by fenceMemoryMs (default 24 h).
      expect(await raw.get(store.fenceKey('k'))).toBe('1');
      expect(await keyGoneAt(raw, store.fenceKey('k'))).toBeGreaterThanOrEqual(
        done!.expiresAt + 86_400_000 - 1,
      );
      await sleep(250);
      // Redis freed the record (outcome bytes included) on time...
      expect(await raw.exists(store.redisKey('k'))).toBe(0);
      // ...and the next acquisition continues from the remembered fence.
      const again = await acquireK(owner(), 'fp');
      expect(again).toMatchObject({ kind: 'acquired', fence: 2, takeover: false });
      expect(await raw.get(store.fenceKey('k'))).toBe('2');
    });

    it('with fenceMemoryMs 0 keeps one key per record and restarts fences at 1 after expiry', async () => {
      prefix = randomPrefix();
      store = createRedisStore({ client, keyPrefix: prefix, fenceMemoryMs: 0 });
      const me = owner();
      await acquireK(me, 'fp');
      await store.release({ key: 'k', owner: me, retentionMs: 200 });
      expect(await raw.exists(store.fenceKey('k'))).toBe(0);
      expect(
        (
          await store.acquire({
            key: 'k',
            fingerprint: 'fp',
            owner: owner(),
            leaseMs: 100,
            retentionMs: 100,
          })
        ).kind,
      ).toBe('acquired');
      expect((await rawRecord(raw, store.redisKey('k')))?.fence).toBe(2);
      await sleep(300);
      expect(await raw.exists(store.redisKey('k'))).toBe(0);
      const later = await acquireK(owner(), 'fp');
      expect(later).toMatchObject({ kind: 'acquired', fence: 1 });
    });

    // Cluster only: slots and shards do not exist on a standalone server.
    if (target.name === 'cluster') {
      it('keeps a record and its fence memory in one slot, and spreads records over every shard', async () => {
        fresh();
        const cluster = raw as Cluster;
        const keys = Array.from({ length: 30 }, () => randomBytes(32).toString('hex'));
        for (const key of keys) {
          await store.acquire({
            key,
            fingerprint: 'fp',
            owner: owner(),
            leaseMs: LEASE,
            retentionMs: RETENTION,
          });
          const [recordSlot, fenceSlot] = await Promise.all([
            cluster.cluster('KEYSLOT', store.redisKey(key)),
            cluster.cluster('KEYSLOT', store.fenceKey(key)),
          ]);
          expect(typeof recordSlot).toBe('number');
          expect(fenceSlot).toBe(recordSlot);
        }
        const perShard = await Promise.all(
          cluster.nodes('master').map(async (node) => (await node.keys(`${prefix}*`)).length),
        );
        expect(perShard).toHaveLength(3);
        for (const count of perShard) expect(count).toBeGreaterThan(0);
        expect(perShard.reduce((a, b) => a + b, 0)).toBe(60);
      });
    }

    it('lets exactly one of 50 concurrent acquires of a free key win', async () => {
      fresh();
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          store.acquire({
            key: 'race',
            fingerprint: 'fp',
            owner: `o${i}`,
            leaseMs: LEASE,
            retentionMs: RETENTION,
          }),
        ),
      );
      const winners = results.filter((r) => r.kind === 'acquired');
      expect(winners).toHaveLength(1);
      const record = await rawRecord(raw, store.redisKey('race'));
      for (const r of results) if (r.kind === 'found') expect(r.record).toEqual(record);
      expect(record?.fence).toBe(1);
    });

    it('rejects an outcome over maxOutcomeBytes before writing anything', async () => {
      prefix = randomPrefix();
      store = createRedisStore({ client, keyPrefix: prefix, maxOutcomeBytes: 16 });
      expect(store.capabilities).toEqual({ clock: 'server', maxOutcomeBytes: 16 });
      const me = owner();
      await acquireK(me, 'fp');
      const before = await rawRecord(raw, store.redisKey('k'));
      await expect(
        store.complete({
          key: 'k',
          owner: me,
          outcome: new Uint8Array(17),
          retentionMs: RETENTION,
        }),
      ).rejects.toBeInstanceOf(OutcomeTooLargeError);
      expect(await rawRecord(raw, store.redisKey('k'))).toEqual(before);
    });

    it('turns a Redis error into StoreUnavailableError with the cause attached', async () => {
      fresh();
      const acquire = () =>
        store
          .acquire({
            key: 'k',
            fingerprint: 'fp',
            owner: owner(),
            leaseMs: LEASE,
            retentionMs: RETENTION,
          })
          .catch((e: unknown) => e);
      await raw.rpush(store.redisKey('k'), 'not a record');
      const error = await acquire();
      expect(error).toBeInstanceOf(StoreUnavailableError);
      expect((error as StoreUnavailableError).code).toBe('STORE_UNAVAILABLE');
      expect(String((error as Error).cause)).toMatch(/WRONGTYPE/);
      // A string that is not a record of a known format is never taken for a free key.
      await raw.set(store.redisKey('k'), 'not a record');
      const unknown = await acquire();
      expect(unknown).toBeInstanceOf(StoreUnavailableError);
      expect(String((unknown as Error).cause)).toMatch(/unknown record format/);
      expect(await raw.get(store.redisKey('k'))).toBe('not a record');
    });

    it('opens no connection when created', async () => {
      const lazy =
        target.name === 'cluster'
          ? new Cluster(
              (clusterPorts ?? []).map((port) => ({ host: '127.0.0.1', port })),
              { ...recommendedRedisClusterOptions(), lazyConnect: true },
            )
          : new Redis(REDIS_URL, { ...recommendedRedisOptions(), lazyConnect: true });
      createRedisStore({ client: lazy, keyPrefix: randomPrefix() });
      await sleep(50);
      expect(lazy.status).toBe('wait');
      lazy.disconnect();
    });
  });
}
