/**
 * Records of the earlier layout (package 0.1: one hash per storage key with fields `s`, `fp`,
 * `o`, `f`, `lu`, `ex`, `out`, and the `:fence` string) left in Redis by an earlier version:
 * after an upgrade they are judged like records of the current layout, so no request whose
 * outcome the earlier version recorded runs again, no live lease is broken, and fences keep
 * growing. The hashes are written here with plain commands, as the earlier scripts did.
 */
import { randomBytes } from 'node:crypto';
import { createIdempotency, deriveStorageKey, encodeOutcome } from '@idem/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import {
  type Client,
  deletePrefix,
  keyGoneAt,
  randomPrefix,
  rawRecord,
  redisNow,
  skipTarget,
  targets,
} from './targets.js';

const LEASE = 30_000;
const RETENTION = 60_000;
const DAY = 86_400_000;
const owner = () => randomBytes(16).toString('base64url');
const NOT_OWNER = { ok: false, reason: 'not_owner' };

interface LegacyRecord {
  s: 'in_progress' | 'completed' | 'released';
  fp: string;
  o: string;
  f: number;
  lu: number;
  ex: number;
  out?: Uint8Array;
}

for (const target of targets) {
  describe.skipIf(skipTarget(target))(`records of the earlier layout on ${target.name}`, () => {
    let client: Client;
    let raw: Client;
    // Every prefix a test used (a test may build several stores), deleted after it.
    const prefixes: string[] = [];
    let store: RedisStore;

    beforeAll(async () => {
      client = await target.connect();
      raw = await target.connect();
    });
    afterAll(() => {
      client?.disconnect();
      raw?.disconnect();
    });
    afterEach(async () => {
      for (const prefix of prefixes.splice(0)) await deletePrefix(raw, prefix);
    });

    /** A fresh store, and a hash record of the earlier layout at its key `k`. */
    async function legacy(record: LegacyRecord): Promise<string> {
      const prefix = randomPrefix();
      prefixes.push(prefix);
      store = createRedisStore({ client, keyPrefix: prefix });
      const key = store.redisKey('k');
      const fields: (string | Buffer)[] = ['s', record.s, 'fp', record.fp, 'o', record.o];
      fields.push('f', String(record.f), 'lu', String(record.lu), 'ex', String(record.ex));
      if (record.out) fields.push('out', Buffer.from(record.out));
      await raw.hset(key, ...fields);
      await raw.pexpireat(key, record.ex - 1);
      await raw.set(store.fenceKey('k'), String(record.f), 'PX', record.ex + DAY - Date.now());
      return key;
    }
    const acquire = (who: string, fingerprint = 'fp') =>
      store.acquire({ key: 'k', fingerprint, owner: who, leaseMs: LEASE, retentionMs: RETENTION });

    it('replays a completed record of the earlier layout, and finds it through execute()', async () => {
      const now = await redisNow(raw);
      const out = new Uint8Array([0, 255, 1, 254, 2]);
      const me = owner();
      await legacy({ s: 'completed', fp: 'fp', o: me, f: 3, lu: now, ex: now + DAY, out });
      const found = await acquire(owner());
      expect(found).toEqual({
        kind: 'found',
        now: expect.any(Number),
        record: {
          status: 'completed',
          fingerprint: 'fp',
          owner: me,
          fence: 3,
          leaseUntil: now,
          expiresAt: now + DAY,
          outcome: out,
        },
      });
      expect(await store.get('k')).toEqual((found as { record: unknown }).record);
      // Nothing was rewritten: a read leaves the earlier record as it was.
      expect(await raw.type(store.redisKey('k'))).toBe('hash');

      // Through the engine: what an earlier version recorded is replayed, never run again.
      const charge = deriveStorageKey('tenant-1', 'order-1');
      await raw.hset(store.redisKey(charge), 's', 'completed', 'fp', '', 'o', me, 'f', '1');
      await raw.hset(store.redisKey(charge), 'lu', String(now), 'ex', String(now + DAY));
      const recorded = encodeOutcome({
        meta: { kind: 'value', value: { encoding: 'json', undefined: false } },
        body: new TextEncoder().encode('{"id":"ch_1"}'),
      });
      await raw.hset(store.redisKey(charge), 'out', Buffer.from(recorded));
      const idem = createIdempotency<{ id: string }>({ store, heartbeatMs: false });
      let runs = 0;
      const again = await idem.execute({ key: 'order-1', scope: 'tenant-1' }, async () => {
        runs++;
        return { id: 'ch_2' };
      });
      expect(again).toEqual({ value: { id: 'ch_1' }, replayed: true });
      expect(runs).toBe(0);
    });

    it('respects a live lease of the earlier layout; its owner cannot write through this version', async () => {
      const now = await redisNow(raw);
      const theirs = owner();
      const key = await legacy({
        s: 'in_progress',
        fp: 'fp',
        o: theirs,
        f: 7,
        lu: now + LEASE,
        ex: now + LEASE + RETENTION,
      });
      const found = await acquire(owner(), 'other');
      expect(found).toMatchObject({
        kind: 'found',
        record: { status: 'in_progress', fingerprint: 'fp', owner: theirs, fence: 7 },
      });
      // An owner of this version never holds a hash: these change nothing.
      const w = { key: 'k', owner: theirs, retentionMs: RETENTION };
      expect(await store.complete({ ...w, outcome: new Uint8Array([1]) })).toEqual(NOT_OWNER);
      expect(await store.extend({ ...w, leaseMs: LEASE })).toEqual(NOT_OWNER);
      expect(await store.release(w)).toEqual(NOT_OWNER);
      expect(await raw.type(key)).toBe('hash');
      expect(await raw.hget(key, 's')).toBe('in_progress');
    });

    it('takes over a passed lease of the earlier layout with the next fence, in the current layout', async () => {
      const now = await redisNow(raw);
      const key = await legacy({
        s: 'in_progress',
        fp: 'fp',
        o: owner(),
        f: 7,
        lu: now - 1,
        ex: now + RETENTION,
      });
      const me = owner();
      const taken = await acquire(me);
      expect(taken).toMatchObject({ kind: 'acquired', fence: 8, takeover: true });
      if (taken.kind !== 'acquired') throw new Error('unreachable');
      expect(await raw.type(key)).toBe('string');
      expect(await rawRecord(raw, key)).toEqual({
        status: 'in_progress',
        fingerprint: 'fp',
        owner: me,
        fence: 8,
        leaseUntil: taken.leaseUntil,
        expiresAt: taken.leaseUntil + RETENTION,
      });
      expect(await keyGoneAt(raw, key)).toBe(taken.leaseUntil + RETENTION);
      expect(await raw.get(store.fenceKey('k'))).toBe('8');
      const outcome = new Uint8Array([9, 9]);
      expect(
        await store.complete({ key: 'k', owner: me, outcome, retentionMs: RETENTION }),
      ).toEqual({ ok: true });
      expect((await rawRecord(raw, key))?.outcome).toEqual(outcome);
    });

    it('continues the fence of a released or expired record of the earlier layout', async () => {
      const now = await redisNow(raw);
      await legacy({ s: 'released', fp: 'fp', o: owner(), f: 4, lu: now, ex: now + RETENTION });
      // As an earlier version with fenceMemoryMs 0 left it: the fence is in the hash alone.
      await raw.del(store.fenceKey('k'));
      expect(await acquire(owner())).toMatchObject({ kind: 'acquired', fence: 5, takeover: false });

      // Expired by its retention deadline while Redis still holds the key.
      const key = await legacy({
        s: 'completed',
        fp: 'fp',
        o: owner(),
        f: 9,
        lu: now - 10,
        ex: now - 1,
        out: new Uint8Array([1]),
      });
      await raw.pexpireat(key, now + RETENTION);
      expect(await store.get('k')).toBeUndefined();
      const again = await acquire(owner());
      expect(again).toMatchObject({ kind: 'acquired', fence: 10, takeover: false });
      const record = await rawRecord(raw, key);
      expect(record?.status).toBe('in_progress');
      expect(record?.outcome).toBeUndefined();
    });

    it('answers a redelivered acquire on its own record of the earlier layout as its acquisition', async () => {
      const now = await redisNow(raw);
      const me = owner();
      const key = await legacy({
        s: 'in_progress',
        fp: 'fp',
        o: me,
        f: 2,
        lu: now + 1_000,
        ex: now + 1_000 + RETENTION,
      });
      const again = await acquire(me);
      expect(again).toMatchObject({ kind: 'acquired', fence: 2, takeover: false });
      if (again.kind !== 'acquired') throw new Error('unreachable');
      expect(await rawRecord(raw, key)).toEqual({
        status: 'in_progress',
        fingerprint: 'fp',
        owner: me,
        fence: 2,
        leaseUntil: again.leaseUntil,
        expiresAt: again.leaseUntil + RETENTION,
      });
      expect(await keyGoneAt(raw, key)).toBe(again.leaseUntil + RETENTION);
    });
  });
}
