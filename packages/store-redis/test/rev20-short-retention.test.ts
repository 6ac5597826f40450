/**
 * rev20: a write whose new retention deadline is already due (a release with `retentionMs`
 * 0 or 1, reachable through core's `retentionMs: 1`; an extend or a redelivered acquire with
 * a lease and a retention of 0 through the store's API) sets the key's expiry first
 * (`PEXPIREAT ex - 1`, in the past: Redis deletes the key at once), then rewrote the header
 * in place with `SETRANGE`, which created a new 34-byte value with no expiry. Every later
 * acquire of the key failed unpacking it (`STORE_UNAVAILABLE`), for ever: an outage of the
 * key that never ended by itself.
 */
import { createIdempotency } from '@idem/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import { type Client, deletePrefix, randomPrefix, standalone } from './targets.js';

let client: Client;
let prefix: string;
let store: RedisStore;
beforeAll(async () => {
  client = await standalone.connect();
  prefix = randomPrefix();
  store = createRedisStore({ client, keyPrefix: prefix });
});
afterAll(async () => {
  await deletePrefix(client, prefix);
  client.disconnect();
});

/** Keys under the prefix that Redis keeps with no expiry (every idem key has one). */
async function keysWithoutExpiry(): Promise<string[]> {
  const keys = await client.keys(`${prefix}*`);
  const ttls = await Promise.all(keys.map((key) => client.pttl(key)));
  return keys.filter((_, i) => ttls[i] === -1);
}

const input = (key: string, owner: string, leaseMs = 10_000, retentionMs = 60_000) => ({
  key,
  owner,
  fingerprint: 'fp',
  leaseMs,
  retentionMs,
});

describe('a deadline already due when written', () => {
  it('core with retentionMs 1: the retry after a failed execution runs (no key left broken)', async () => {
    const idem = createIdempotency({ store, retentionMs: 1 });
    const answers: string[] = [];
    for (let i = 0; i < 5; i++) {
      const request = { key: `short-${i}`, scope: 'rev20' };
      await expect(
        idem.execute(request, async () => {
          throw new Error('the operation failed');
        }),
      ).rejects.toThrow('the operation failed');
      answers.push(
        await idem
          .execute(request, async () => 'ran')
          .then(
            (done) => String(done.value),
            (error: { code?: string }) => String(error.code),
          ),
      );
    }
    expect(answers).toEqual(['ran', 'ran', 'ran', 'ran', 'ran']);
    expect(await keysWithoutExpiry()).toEqual([]);
  });

  it('release with retentionMs 0: the key is acquired again, with the next fence', async () => {
    expect(await store.acquire(input('release-0', 'a'))).toMatchObject({
      kind: 'acquired',
      fence: 1,
    });
    expect(await store.release({ key: 'release-0', owner: 'a', retentionMs: 0 })).toEqual({
      ok: true,
    });
    expect(await store.get('release-0')).toBeUndefined();
    expect(await store.acquire(input('release-0', 'b'))).toMatchObject({
      kind: 'acquired',
      fence: 2,
    });
    expect(await keysWithoutExpiry()).toEqual([]);
  });

  it('extend with a lease and a retention of 0: the record expires, the key is acquired again', async () => {
    expect(await store.acquire(input('extend-0', 'a'))).toMatchObject({
      kind: 'acquired',
      fence: 1,
    });
    await store.extend({ key: 'extend-0', owner: 'a', leaseMs: 0, retentionMs: 0 });
    expect(await store.get('extend-0')).toBeUndefined();
    expect(await store.acquire(input('extend-0', 'b'))).toMatchObject({
      kind: 'acquired',
      fence: 2,
    });
    expect(await keysWithoutExpiry()).toEqual([]);
  });

  it('a redelivered acquire with a lease and a retention of 0: the key is acquired again', async () => {
    expect(await store.acquire(input('redelivered-0', 'a'))).toMatchObject({ kind: 'acquired' });
    await store.acquire(input('redelivered-0', 'a', 0, 0));
    expect(await store.get('redelivered-0')).toBeUndefined();
    expect(await store.acquire(input('redelivered-0', 'b'))).toMatchObject({
      kind: 'acquired',
      fence: 2,
    });
    expect(await keysWithoutExpiry()).toEqual([]);
  });
});
