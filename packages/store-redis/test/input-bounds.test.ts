/**
 * Input a store must either honour or refuse before writing: durations at the edge of what
 * core accepts, owner tokens and storage keys that would make two callers one.
 */
import { randomBytes } from 'node:crypto';
import { createIdempotency, InvalidInputError } from '@idem/core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import {
  type Client,
  deletePrefix,
  randomPrefix,
  rawRecord,
  skipTarget,
  targets,
} from './targets.js';

const owner = () => randomBytes(16).toString('base64url');

async function invalid(promise: Promise<unknown>): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(InvalidInputError);
  expect((error as InvalidInputError).code).toBe('INVALID_INPUT');
}

for (const target of targets) {
  describe.skipIf(skipTarget(target))(`input bounds on ${target.name}`, () => {
    let client: Client;
    let raw: Client;
    let prefix = randomPrefix();
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
      await deletePrefix(raw, prefix);
    });
    const fresh = () => {
      prefix = randomPrefix();
      store = createRedisStore({ client, keyPrefix: prefix });
      return store;
    };

    it('a retention as long as core accepts (Number.MAX_SAFE_INTEGER ms) still replays', async () => {
      fresh();
      const me = owner();
      const retentionMs = Number.MAX_SAFE_INTEGER;
      const input = { key: 'k', fingerprint: 'fp', leaseMs: 30_000, retentionMs };
      expect(await store.acquire({ ...input, owner: me })).toMatchObject({ kind: 'acquired' });
      const outcome = new Uint8Array([7, 0, 255]);
      expect(await store.complete({ key: 'k', owner: me, outcome, retentionMs })).toEqual({
        ok: true,
      });
      const found = await store.acquire({ ...input, owner: owner() });
      expect(found.kind).toBe('found');
      if (found.kind !== 'found') throw new Error('unreachable');
      expect(found.record).toMatchObject({ status: 'completed', owner: me, fence: 1 });
      expect(Number.isSafeInteger(found.record.expiresAt)).toBe(true);
      expect(Buffer.from(found.record.outcome!)).toEqual(Buffer.from(outcome));
      expect((await store.get('k'))?.status).toBe('completed');

      // The same through core, which accepts this retention.
      const idem = createIdempotency<string>({ store, retentionMs, heartbeatMs: false });
      let runs = 0;
      const run = async () => {
        runs++;
        return 'charged';
      };
      expect(await idem.execute({ key: 'order', scope: 't' }, run)).toEqual({
        value: 'charged',
        replayed: false,
      });
      expect(await idem.execute({ key: 'order', scope: 't' }, run)).toEqual({
        value: 'charged',
        replayed: true,
      });
      expect(runs).toBe(1);
    });

    it('refuses a duration past Number.MAX_SAFE_INTEGER with INVALID_INPUT and writes nothing', async () => {
      fresh();
      const me = owner();
      const base = { key: 'k', fingerprint: 'fp', owner: me, leaseMs: 30_000, retentionMs: 1_000 };
      await invalid(store.acquire({ ...base, leaseMs: 1e20 }));
      await invalid(store.acquire({ ...base, retentionMs: 1e20 }));
      expect(await raw.exists(store.redisKey('k'), store.fenceKey('k'))).toBe(0);
      // The key still works afterwards.
      expect(await store.acquire(base)).toMatchObject({ kind: 'acquired', fence: 1 });
      await invalid(store.extend({ key: 'k', owner: me, leaseMs: 1e20, retentionMs: 1_000 }));
      await invalid(
        store.complete({ key: 'k', owner: me, outcome: new Uint8Array(1), retentionMs: 1e20 }),
      );
      await invalid(store.release({ key: 'k', owner: me, retentionMs: 1e20 }));
      expect(await rawRecord(raw, store.redisKey('k'))).toMatchObject({
        status: 'in_progress',
        owner: me,
      });
    });

    it('refuses an owner that is empty, not a string, or not well-formed UTF-16: two such callers would be one', async () => {
      fresh();
      const base = { key: 'k', fingerprint: 'fp', leaseMs: 30_000, retentionMs: 60_000 };
      // '' twice, or two different lone surrogates (both sent as U+FFFD), would each be
      // answered as the other's own acquisition.
      for (const bad of ['', 'a\uD800', 'a\uDBFF', undefined, null, 5] as unknown as string[]) {
        await invalid(store.acquire({ ...base, owner: bad }));
        await invalid(store.extend({ key: 'k', owner: bad, leaseMs: 1_000, retentionMs: 1_000 }));
        await invalid(store.release({ key: 'k', owner: bad, retentionMs: 1_000 }));
        await invalid(
          store.complete({ key: 'k', owner: bad, outcome: new Uint8Array(1), retentionMs: 1_000 }),
        );
      }
      expect(await raw.exists(store.redisKey('k'), store.fenceKey('k'))).toBe(0);
    });

    it('refuses an outcome that is not bytes, and writes nothing', async () => {
      fresh();
      const me = owner();
      await store.acquire({
        key: 'k',
        fingerprint: 'fp',
        owner: me,
        leaseMs: 30_000,
        retentionMs: 60_000,
      });
      const before = await rawRecord(raw, store.redisKey('k'));
      for (const outcome of ['text', [1, 2], undefined, { length: 1 }] as unknown as Uint8Array[]) {
        await invalid(store.complete({ key: 'k', owner: me, outcome, retentionMs: 60_000 }));
      }
      expect(await rawRecord(raw, store.redisKey('k'))).toEqual(before);
      // Bytes of any view type are fine, the empty outcome included.
      const view = new Uint8Array(new ArrayBuffer(8), 2, 0);
      expect(
        await store.complete({ key: 'k', owner: me, outcome: view, retentionMs: 60_000 }),
      ).toEqual({ ok: true });
      expect((await store.get('k'))?.outcome).toEqual(new Uint8Array(0));
    });

    it('refuses a storage key that is empty or not well-formed UTF-16', async () => {
      fresh();
      const base = { fingerprint: 'fp', owner: owner(), leaseMs: 30_000, retentionMs: 60_000 };
      // An empty hash tag ({}) hashes the whole key: the record and its fence memory would
      // land in different Cluster slots. Lone surrogates would make two keys one.
      for (const key of ['', 'k\uD800', 'k\uDC00']) {
        await invalid(store.acquire({ ...base, key }));
        await invalid(store.get(key));
      }
      expect(() => store.redisKey('')).toThrow(InvalidInputError);
      expect(() => createRedisStore({ client, keyPrefix: 'p\uD800:' })).toThrow(InvalidInputError);
    });

    it('refuses a fingerprint that is not well-formed: it would come back as another string', async () => {
      fresh();
      const base = { key: 'k', owner: owner(), leaseMs: 30_000, retentionMs: 60_000 };
      await invalid(store.acquire({ ...base, fingerprint: 'fp\uD800' }));
      await invalid(store.acquire({ ...base, fingerprint: 7 as unknown as string }));
      expect(await raw.exists(store.redisKey('k'))).toBe(0);
      // Empty is a fingerprint (core sends '' when a request has none).
      expect(await store.acquire({ ...base, fingerprint: '' })).toMatchObject({ kind: 'acquired' });
    });

    it('refuses a storage key or owner over 1024 code units (a 2 MiB one was written), as PostgreSQL and DynamoDB do', async () => {
      fresh();
      const base = { fingerprint: 'fp', leaseMs: 30_000, retentionMs: 60_000 };
      for (const long of ['k'.repeat(1025), 'k'.repeat(2 * 1024 * 1024)]) {
        await invalid(store.acquire({ ...base, key: long, owner: owner() }));
        await invalid(store.acquire({ ...base, key: 'k', owner: long }));
        await invalid(
          store.complete({ key: 'k', owner: long, outcome: new Uint8Array(1), retentionMs: 1 }),
        );
        await invalid(store.release({ key: 'k', owner: long, retentionMs: 1 }));
        await invalid(store.extend({ key: 'k', owner: long, leaseMs: 1, retentionMs: 1 }));
      }
      expect(await raw.exists(store.redisKey('k'))).toBe(0);
      expect(await raw.keys(`${prefix}*`)).toEqual([]);
      // At the limit both are taken.
      const edge = 'e'.repeat(1024);
      expect(await store.acquire({ ...base, key: edge, owner: edge })).toMatchObject({
        kind: 'acquired',
      });
      expect(
        await store.complete({
          key: edge,
          owner: edge,
          outcome: new Uint8Array(1),
          retentionMs: 1,
        }),
      ).toEqual({ ok: true });
    });
  });
}
