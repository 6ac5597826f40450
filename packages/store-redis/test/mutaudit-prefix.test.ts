/**
 * Mutation audit (store-redis): `keyPrefix` keeps two stores on one Redis apart, every key of
 * them. The conformance suite gives every store its own prefix but also its own random storage
 * keys, so a store that dropped the prefix from a key (the record's, or only the fence
 * memory's) collided with nobody there; other tests caught it only because they read keys
 * back through the same mutated `redisKey`/`fenceKey`. Here two stores with different
 * prefixes use the very same storage key, and a scan checks that every Redis key carrying
 * that storage key sits under one of the two prefixes, in its hash tag.
 */
import { randomBytes } from 'node:crypto';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore } from '../src/index.js';
import { type Client, deletePrefix, randomPrefix, skipTarget, targets } from './targets.js';

const LEASE = 30_000;
const RETENTION = 60_000;
const owner = () => randomBytes(16).toString('base64url');

/** Every key on the server (every primary of a Cluster) whose name contains `part`. */
async function keysContaining(client: Client, part: string): Promise<string[]> {
  const nodes = client instanceof Cluster ? client.nodes('master') : [client];
  const found: string[] = [];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', `*${part}*`, 'COUNT', 1000);
      cursor = next;
      found.push(...keys);
    } while (cursor !== '0');
  }
  return found.sort();
}

for (const target of targets) {
  describe.skipIf(skipTarget(target))(`mutaudit: key prefixes on ${target.name}`, () => {
    let client: Client;
    let raw: Client;
    const p1 = randomPrefix();
    const p2 = randomPrefix();

    beforeAll(async () => {
      client = await target.connect();
      raw = await target.connect();
    });
    afterAll(async () => {
      if (raw) {
        await deletePrefix(raw, p1);
        await deletePrefix(raw, p2);
      }
      client?.disconnect();
      raw?.disconnect();
    });

    it('two prefixes, one storage key: records, fences, fence memories and admin calls never meet', async () => {
      const one = createRedisStore({ client, keyPrefix: p1 });
      const two = createRedisStore({ client, keyPrefix: p2 });
      // A storage key nobody else uses on this Redis, so the scan below sees only these stores.
      const key = `mutaudit${randomBytes(8).toString('hex')}`;
      const input = (who: string) => ({
        key,
        fingerprint: 'fp',
        owner: who,
        leaseMs: LEASE,
        retentionMs: RETENTION,
      });

      const a = owner();
      const b = owner();
      expect(await one.acquire(input(a))).toMatchObject({ kind: 'acquired', fence: 1 });
      expect(await two.acquire(input(b))).toMatchObject({ kind: 'acquired', fence: 1 });
      expect(
        await one.complete({ key, owner: a, outcome: new Uint8Array([1]), retentionMs: RETENTION }),
      ).toEqual({ ok: true });
      // The other store still holds its own in-progress record.
      expect(await two.acquire(input(owner()))).toMatchObject({
        kind: 'found',
        record: { status: 'in_progress', owner: b, fence: 1 },
      });

      // Several acquisitions under the second prefix move only its fences.
      let last = b;
      for (let fence = 2; fence <= 4; fence++) {
        expect(await two.release({ key, owner: last, retentionMs: RETENTION })).toEqual({
          ok: true,
        });
        last = owner();
        expect(await two.acquire(input(last))).toMatchObject({ kind: 'acquired', fence });
      }
      expect((await two.admin.forceRelease(key)).ok).toBe(true);
      expect(await two.admin.delete(key)).toEqual({ deleted: true });

      // The first store's record and fence memory are as it left them.
      expect(await one.get(key)).toMatchObject({ status: 'completed', owner: a, fence: 1 });
      expect(await raw.get(one.fenceKey(key))).toBe('1');
      expect(await one.admin.delete(key)).toEqual({ deleted: true });
      expect(await one.acquire(input(owner()))).toMatchObject({ kind: 'acquired', fence: 2 });
      // The second continues above its own forced fence (6), from its own memory.
      expect(await two.acquire(input(owner()))).toMatchObject({ kind: 'acquired', fence: 6 });

      // Every key holding this storage key is one of the two stores' own.
      expect(await keysContaining(raw, key)).toEqual(
        [one.redisKey(key), one.fenceKey(key), two.redisKey(key), two.fenceKey(key)].sort(),
      );
      expect(one.redisKey(key)).toBe(`${p1}{${key}}`);
      expect(two.fenceKey(key)).toBe(`${p2}{${key}}:fence`);
    });
  });
}
