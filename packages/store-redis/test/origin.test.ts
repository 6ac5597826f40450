/**
 * A record's origin on Redis (store contract, `acquire`, "Origin"), beyond the conformance
 * suite's checks: where the scripts keep it (format 1: the owner is the origin, byte for byte
 * the record written before origins were kept; format 2: an origin section after the
 * fingerprint), that every script finds the outcome, the owner and the origin in both
 * formats, that it outlives the store and the connection that wrote it (a takeover through
 * another client carries it), what the operator's scripts do with it, and that Redis's own
 * expiry of a record begins a new logical request while the fence memory keeps the fence.
 */
import { randomBytes } from 'node:crypto';
import { StoreUnavailableError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import { ACQUIRE_LUA, packDurations } from '../src/scripts.js';
import { owner, targetSession } from './mutaudit-helpers.js';
import {
  keyGoneAt,
  rawFormat,
  rawRecord,
  redisNow,
  skipTarget,
  targets,
  untilGone,
} from './targets.js';

const LEASE = 30_000;
const RETENTION = 60_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const NOT_OWNER = { ok: false, reason: 'not_owner' };

for (const target of targets) {
  describe.skipIf(skipTarget(target))(`a record's origin on ${target.name}`, () => {
    const session = targetSession(target);
    let store: RedisStore;
    const fresh = (options: { fenceMemoryMs?: number } = {}): RedisStore => {
      store = createRedisStore({ client: session.client, keyPrefix: session.prefix(), ...options });
      return store;
    };
    const acquire = (who: string, leaseMs = LEASE, retentionMs = RETENTION, on = store) =>
      on.acquire({ key: 'k', fingerprint: 'fp', owner: who, leaseMs, retentionMs });
    /** A lease of `first`, passed (100 ms), then taken over by `taker`. */
    async function takenOver(first: string, taker: string) {
      expect(await acquire(first, 100)).toMatchObject({ kind: 'acquired', origin: first });
      await sleep(150);
      return acquire(taker);
    }

    it("a free key's record is format 1, exactly as before origins: no byte more, the reply as before", async () => {
      fresh();
      const me = owner();
      const result = await acquire(me);
      expect(result).toMatchObject({ kind: 'acquired', fence: 1, takeover: false, origin: me });
      const bytes = await session.raw.getBuffer(store.redisKey('k'));
      expect(bytes?.[0]).toBe(1);
      // Header, owner, fingerprint: nothing else.
      expect(bytes?.length).toBe(42 + me.length + 'fp'.length);
      const outcome = new Uint8Array([7, 0, 255]);
      expect(
        await store.complete({ key: 'k', owner: me, outcome, retentionMs: RETENTION }),
      ).toEqual({ ok: true });
      expect(await rawFormat(session.raw, store.redisKey('k'))).toBe(1);
      expect(await store.get('k')).toMatchObject({
        status: 'completed',
        owner: me,
        origin: me,
        outcome,
      });
    });

    it('a takeover writes format 2: the origin section after the fingerprint, kept by renewal, completion and replay', async () => {
      fresh();
      const first = owner();
      const taker = owner();
      const taken = await takenOver(first, taker);
      expect(taken).toMatchObject({ kind: 'acquired', fence: 2, takeover: true, origin: first });
      if (taken.kind !== 'acquired') throw new Error('unreachable');
      const key = store.redisKey('k');
      expect(await rawFormat(session.raw, key)).toBe(2);
      expect(await rawRecord(session.raw, key)).toEqual({
        status: 'in_progress',
        fingerprint: 'fp',
        owner: taker,
        fence: 2,
        origin: first,
        leaseUntil: taken.leaseUntil,
        expiresAt: taken.leaseUntil + RETENTION,
      });
      // Another owner finds the record with its origin; the taker's renewal keeps it.
      const found = await acquire(owner());
      expect(found).toMatchObject({ kind: 'found', record: { owner: taker, origin: first } });
      const w = { key: 'k', owner: taker, retentionMs: RETENTION };
      expect(await store.extend({ ...w, leaseMs: LEASE })).toMatchObject({ ok: true });
      expect(await rawRecord(session.raw, key)).toMatchObject({
        owner: taker,
        origin: first,
        fence: 2,
      });
      // The completed record holds the origin section before the outcome.
      const outcome = new Uint8Array(randomBytes(300));
      expect(await store.complete({ ...w, outcome })).toEqual({ ok: true });
      expect(await rawFormat(session.raw, key)).toBe(2);
      const done = await rawRecord(session.raw, key);
      expect(done).toMatchObject({ status: 'completed', owner: taker, origin: first, outcome });
      expect(done?.outcome).toEqual(outcome);
      // A redelivered completion compares the outcome bytes, not the origin section with them.
      expect(await store.complete({ ...w, outcome: outcome.slice() })).toEqual({ ok: true });
      expect(await store.complete({ ...w, outcome: outcome.subarray(1) })).toEqual(NOT_OWNER);
      // The replay and get() answer the outcome alone, and the origin.
      const replay = await acquire(owner());
      expect(replay.kind).toBe('found');
      if (replay.kind !== 'found') throw new Error('unreachable');
      expect(replay.record).toEqual(done);
      expect(await store.get('k')).toEqual(done);
      expect(await store.admin.inspect('k')).toMatchObject({
        status: 'completed',
        owner: taker,
        outcomeBytes: outcome.length,
      });
    });

    it("the script's reply names the origin only when it is not the caller's own token", async () => {
      fresh();
      const run = (who: string, key: string) =>
        session.raw.callBuffer(
          'EVAL',
          ACQUIRE_LUA,
          2,
          store.redisKey(key),
          store.fenceKey(key),
          'fp',
          who,
          packDurations(100, RETENTION, 86_400_000),
        ) as Promise<unknown[]>;
      const first = owner();
      // A free key: {1, fence, leaseUntil, takeover}, as before origins were kept.
      const free = await run(first, 'k');
      expect(free).toHaveLength(4);
      expect(free.slice(0, 2)).toEqual([1, 1]);
      expect(await run(first, 'k')).toHaveLength(4);
      await sleep(150);
      const taker = owner();
      const taken = await run(taker, 'k');
      expect(taken).toHaveLength(5);
      expect([taken[0], taken[1], taken[3]]).toEqual([1, 2, 1]);
      expect(String(taken[4])).toBe(first);
      // Its redelivery too.
      const again = await run(taker, 'k');
      expect([again[0], again[1], again[3], String(again[4])]).toEqual([1, 2, 0, first]);
    });

    it('a redelivered takeover answers the carried origin; a release and its retry carry it again', async () => {
      fresh();
      const first = owner();
      const taker = owner();
      await takenOver(first, taker);
      // Delivered again (its answer lost): the same acquisition, the same origin.
      expect(await acquire(taker)).toMatchObject({
        kind: 'acquired',
        fence: 2,
        takeover: false,
        origin: first,
      });
      const key = store.redisKey('k');
      // The tombstone of a format-2 record keeps its origin section.
      expect(await store.release({ key: 'k', owner: taker, retentionMs: RETENTION })).toEqual({
        ok: true,
      });
      expect(await rawRecord(session.raw, key)).toMatchObject({
        status: 'released',
        owner: taker,
        origin: first,
      });
      expect(await store.admin.inspect('k')).toMatchObject({ status: 'released', outcomeBytes: 0 });
      // The retry continues the request `first` began (not the taker's).
      const retry = owner();
      expect(await acquire(retry)).toMatchObject({
        kind: 'acquired',
        fence: 3,
        takeover: false,
        origin: first,
      });
      expect(await rawRecord(session.raw, key)).toMatchObject({
        owner: retry,
        origin: first,
        fence: 3,
      });
      // A retry after the first owner's own release writes format 1 again: origin = owner.
      const other = fresh();
      const own = owner();
      await acquire(own, LEASE, RETENTION, other);
      await other.release({ key: 'k', owner: own, retentionMs: RETENTION });
      expect(await acquire(own, LEASE, RETENTION, other)).toMatchObject({
        kind: 'acquired',
        fence: 2,
        origin: own,
      });
      expect(await rawFormat(session.raw, other.redisKey('k'))).toBe(1);
    });

    it('the origin is in Redis, not in the process: a takeover through another client and store carries it', async () => {
      fresh();
      const first = owner();
      expect(await acquire(first, 100)).toMatchObject({ kind: 'acquired', origin: first });
      // Another process: its own connection, its own store on the same prefix.
      const other = await target.connect();
      try {
        const prefix = store.redisKey('k').slice(0, -'{k}'.length);
        const second = createRedisStore({ client: other, keyPrefix: prefix });
        await sleep(150);
        const taker = owner();
        expect(await acquire(taker, 100, RETENTION, second)).toMatchObject({
          kind: 'acquired',
          fence: 2,
          takeover: true,
          origin: first,
        });
        // And a third store, on a third connection, after the taker's lease passed too.
        const third = await target.connect();
        try {
          const later = createRedisStore({ client: third, keyPrefix: prefix });
          await sleep(150);
          expect(await acquire(owner(), LEASE, RETENTION, later)).toMatchObject({
            kind: 'acquired',
            fence: 3,
            takeover: true,
            origin: first,
          });
          expect((await later.get('k'))?.origin).toBe(first);
        } finally {
          third.disconnect();
        }
      } finally {
        other.disconnect();
      }
      expect((await store.get('k'))?.origin).toBe(first);
    });

    it("forceRelease keeps the origin in the tombstone (a format-2 record's origin, not its owner); the retry carries it", async () => {
      fresh();
      const first = owner();
      const taker = owner();
      await takenOver(first, taker);
      const key = store.redisKey('k');
      expect(await store.admin.forceRelease('k')).toEqual({
        ok: true,
        fence: 3,
        previousOwner: taker,
      });
      const tombstone = await rawRecord(session.raw, key);
      expect(tombstone).toMatchObject({ status: 'released', fence: 3, origin: first });
      expect(tombstone?.owner).not.toBe(taker);
      expect(tombstone?.owner).not.toBe(first);
      const retry = owner();
      expect(await acquire(retry)).toMatchObject({ kind: 'acquired', fence: 4, origin: first });

      // A format-1 record force-released: its owner is the origin the tombstone keeps.
      fresh();
      const stuck = owner();
      await acquire(stuck);
      expect(await store.admin.forceRelease('k', { owner: stuck, fence: 1 })).toMatchObject({
        ok: true,
        fence: 2,
      });
      expect(await rawFormat(session.raw, store.redisKey('k'))).toBe(2);
      expect(await rawRecord(session.raw, store.redisKey('k'))).toMatchObject({
        status: 'released',
        origin: stuck,
      });
      expect(await acquire(owner())).toMatchObject({ kind: 'acquired', fence: 3, origin: stuck });
    });

    it('delete forgets the origin: the next acquisition begins a new request, the fence memory still raises the fence', async () => {
      for (const fenceMemoryMs of [undefined, 0]) {
        fresh({ fenceMemoryMs });
        const first = owner();
        const taker = owner();
        await takenOver(first, taker);
        expect(await store.admin.delete('k')).toEqual({ deleted: true });
        const next = owner();
        expect(await acquire(next), `fenceMemoryMs ${fenceMemoryMs}`).toMatchObject({
          kind: 'acquired',
          fence: 3,
          takeover: false,
          origin: next,
        });
        expect(await rawFormat(session.raw, store.redisKey('k'))).toBe(1);
      }
    });

    it('a record Redis expired (short retention, real key expiry) begins a new request; the fence keeps growing', async () => {
      fresh();
      const first = owner();
      const taker = owner();
      const short = { lease: 100, retention: 200 };
      expect(await acquire(first, short.lease, short.retention)).toMatchObject({
        kind: 'acquired',
        fence: 1,
        origin: first,
      });
      await sleep(short.lease + 50);
      const taken = await acquire(taker, short.lease, short.retention);
      expect(taken).toMatchObject({ kind: 'acquired', fence: 2, takeover: true, origin: first });
      if (taken.kind !== 'acquired') throw new Error('unreachable');
      const key = store.redisKey('k');
      expect(await keyGoneAt(session.raw, key)).toBe(taken.leaseUntil + short.retention);
      // Redis drops the key itself at the record's deadline; the fence memory stays.
      await untilGone(session.raw, key);
      expect(await redisNow(session.raw)).toBeGreaterThanOrEqual(
        taken.leaseUntil + short.retention,
      );
      expect(await session.raw.get(store.fenceKey('k'))).toBe('2');
      const next = owner();
      expect(await acquire(next)).toMatchObject({
        kind: 'acquired',
        fence: 3,
        takeover: false,
        origin: next,
      });
      expect(await rawRecord(session.raw, key)).toMatchObject({
        owner: next,
        origin: next,
        fence: 3,
      });
      expect(await rawFormat(session.raw, key)).toBe(1);
    });

    it('a format-2 value whose origin section runs past its end is refused, and left as it is', async () => {
      fresh();
      const first = owner();
      await takenOver(first, owner());
      const key = store.redisKey('k');
      const bytes = await session.raw.getBuffer(key);
      if (!bytes) throw new Error('no record');
      const at = 42 + bytes.readUInt32BE(34) + bytes.readUInt32BE(38);
      const broken = Buffer.from(bytes);
      broken.writeUInt32BE(0xffff, at);
      await session.raw.set(key, broken, 'PX', 60_000);
      await expect(store.get('k')).rejects.toThrow(/malformed record/);
      await expect(store.admin.forceRelease('k')).rejects.toThrow(/malformed record/);
      await expect(store.admin.delete('k')).rejects.toThrow(/malformed record/);
      expect((await session.raw.getBuffer(key))?.equals(broken)).toBe(true);
      // A format byte beyond 2 is still no record.
      const unknown = Buffer.from(bytes);
      unknown[0] = 3;
      await session.raw.set(key, unknown, 'PX', 60_000);
      const refused = await acquire(owner()).catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(StoreUnavailableError);
      expect(String((refused as Error).cause)).toMatch(/unknown record format/);
      expect((await session.raw.getBuffer(key))?.equals(unknown)).toBe(true);
    });
  });
}
