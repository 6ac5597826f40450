/**
 * Records of the earlier layout (package 0.1: one hash per storage key with fields `s`, `fp`,
 * `o`, `f`, `lu`, `ex`, `out`, and the `:fence` string) left in Redis by an earlier version:
 * after an upgrade they are judged like records of the current layout, so no request whose
 * outcome the earlier version recorded runs again, no live lease is broken, and fences keep
 * growing. The hashes are written here with plain commands, as the earlier scripts did.
 * Neither they nor the string records written before origins were kept (format 1, the second
 * block) hold an origin: their owner began their logical request, so a takeover or the retry
 * of a released one carries the owner over as the origin.
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
  rawFormat,
  rawRecord,
  redisNow,
  skipTarget,
  targets,
  untilGone,
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
          // A record written before origins were kept counts its owner as its origin.
          origin: me,
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
        record: {
          status: 'in_progress',
          fingerprint: 'fp',
          owner: theirs,
          fence: 7,
          origin: theirs,
        },
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
      const crashed = owner();
      const key = await legacy({
        s: 'in_progress',
        fp: 'fp',
        o: crashed,
        f: 7,
        lu: now - 1,
        ex: now + RETENTION,
      });
      const me = owner();
      const taken = await acquire(me);
      // The hash holds no origin: its owner began the logical request, which goes on.
      expect(taken).toMatchObject({ kind: 'acquired', fence: 8, takeover: true, origin: crashed });
      if (taken.kind !== 'acquired') throw new Error('unreachable');
      expect(await raw.type(key)).toBe('string');
      expect(await rawFormat(raw, key)).toBe(2);
      expect(await rawRecord(raw, key)).toEqual({
        status: 'in_progress',
        fingerprint: 'fp',
        owner: me,
        fence: 8,
        origin: crashed,
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
      const gaveUp = owner();
      await legacy({ s: 'released', fp: 'fp', o: gaveUp, f: 4, lu: now, ex: now + RETENTION });
      // As an earlier version with fenceMemoryMs 0 left it: the fence is in the hash alone.
      await raw.del(store.fenceKey('k'));
      // The retry of a released request continues it: the hash's owner is its origin.
      expect(await acquire(owner())).toMatchObject({
        kind: 'acquired',
        fence: 5,
        takeover: false,
        origin: gaveUp,
      });

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
      // An expired record is a free key: a new logical request, whose origin is its owner.
      const next = owner();
      const again = await acquire(next);
      expect(again).toMatchObject({ kind: 'acquired', fence: 10, takeover: false, origin: next });
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
      expect(again).toMatchObject({ kind: 'acquired', fence: 2, takeover: false, origin: me });
      if (again.kind !== 'acquired') throw new Error('unreachable');
      expect(await rawFormat(raw, key)).toBe(1);
      expect(await rawRecord(raw, key)).toEqual({
        status: 'in_progress',
        fingerprint: 'fp',
        owner: me,
        fence: 2,
        origin: me,
        leaseUntil: again.leaseUntil,
        expiresAt: again.leaseUntil + RETENTION,
      });
      expect(await keyGoneAt(raw, key)).toBe(again.leaseUntil + RETENTION);
    });

    describe('records written before origins were kept (format 1)', () => {
      /**
       * A fresh store, and at its key `k` a record as the build before origins wrote it
       * (format 1: 42-byte header, owner, fingerprint, outcome; no origin anywhere), written
       * with plain commands, with its fence memory.
       */
      async function preOrigin(record: {
        status: 1 | 2 | 3;
        o: string;
        f: number;
        lu: number;
        ex: number;
        out?: Uint8Array;
      }): Promise<string> {
        const prefix = randomPrefix();
        prefixes.push(prefix);
        store = createRedisStore({ client, keyPrefix: prefix });
        const head = Buffer.alloc(42);
        head[0] = 1;
        head[1] = record.status;
        head.writeDoubleBE(record.f, 2);
        head.writeDoubleBE(record.lu, 10);
        head.writeDoubleBE(record.ex, 18);
        head.writeDoubleBE(record.ex + DAY, 26);
        head.writeUInt32BE(Buffer.byteLength(record.o), 34);
        head.writeUInt32BE(2, 38);
        const key = store.redisKey('k');
        const value = [head, Buffer.from(record.o), Buffer.from('fp')];
        if (record.out) value.push(Buffer.from(record.out));
        await raw.set(key, Buffer.concat(value), 'PXAT', record.ex - 1);
        await raw.set(store.fenceKey('k'), String(record.f), 'PXAT', record.ex + DAY);
        return key;
      }
      it('a takeover of a passed lease carries its owner as the origin', async () => {
        const now = await redisNow(raw);
        const crashed = owner();
        const key = await preOrigin({
          status: 1,
          o: crashed,
          f: 4,
          lu: now - 1,
          ex: now + RETENTION,
        });
        expect(await store.get('k')).toMatchObject({ owner: crashed, origin: crashed, fence: 4 });
        const me = owner();
        const taken = await acquire(me);
        expect(taken).toMatchObject({
          kind: 'acquired',
          fence: 5,
          takeover: true,
          origin: crashed,
        });
        if (taken.kind !== 'acquired') throw new Error('unreachable');
        expect(await rawFormat(raw, key)).toBe(2);
        expect(await rawRecord(raw, key)).toEqual({
          status: 'in_progress',
          fingerprint: 'fp',
          owner: me,
          fence: 5,
          origin: crashed,
          leaseUntil: taken.leaseUntil,
          expiresAt: taken.leaseUntil + RETENTION,
        });
        // The taker completes; the replay answers the outcome and the origin.
        const outcome = new Uint8Array([1, 2, 3]);
        expect(
          await store.complete({ key: 'k', owner: me, outcome, retentionMs: RETENTION }),
        ).toEqual({ ok: true });
        expect(await acquire(owner())).toMatchObject({
          kind: 'found',
          record: { status: 'completed', owner: me, origin: crashed, outcome },
        });
      });

      it('the retry of a released tombstone carries its owner; a live lease is found with its owner as origin', async () => {
        const now = await redisNow(raw);
        const gaveUp = owner();
        await preOrigin({ status: 3, o: gaveUp, f: 2, lu: now, ex: now + RETENTION });
        expect(await acquire(owner())).toMatchObject({
          kind: 'acquired',
          fence: 3,
          takeover: false,
          origin: gaveUp,
        });
        const running = owner();
        await preOrigin({
          status: 1,
          o: running,
          f: 1,
          lu: now + LEASE,
          ex: now + LEASE + RETENTION,
        });
        expect(await acquire(owner())).toMatchObject({
          kind: 'found',
          record: { status: 'in_progress', owner: running, origin: running, fence: 1 },
        });
        // Its own owner's redelivered acquire: the origin is its owner, the record format 1.
        expect(await acquire(running)).toMatchObject({
          kind: 'acquired',
          fence: 1,
          takeover: false,
          origin: running,
        });
        expect(await rawFormat(raw, store.redisKey('k'))).toBe(1);
      });

      it('a completed record is replayed byte for byte; once expired the key begins a new request', async () => {
        const now = await redisNow(raw);
        const done = owner();
        const out = new Uint8Array([0, 255, 13, 10]);
        // Retained 2 s: a loaded machine (CI lanes) took more than 300 ms to the first acquire.
        const key = await preOrigin({ status: 2, o: done, f: 6, lu: now, ex: now + 2_000, out });
        expect(await acquire(owner())).toEqual({
          kind: 'found',
          now: expect.any(Number),
          record: {
            status: 'completed',
            fingerprint: 'fp',
            owner: done,
            fence: 6,
            origin: done,
            leaseUntil: now,
            expiresAt: now + 2_000,
            outcome: out,
          },
        });
        expect(await store.admin.inspect('k')).toMatchObject({ outcomeBytes: out.length });
        await untilGone(raw, key, 10_000);
        const next = owner();
        expect(await acquire(next)).toMatchObject({ kind: 'acquired', fence: 7, origin: next });
      });
    });
  });
}
