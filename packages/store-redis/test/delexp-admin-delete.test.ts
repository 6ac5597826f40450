// delexp: `admin.delete(key, expected)` on Redis beyond the conformance suite: the expectation
// is decided inside the one delete script (one command, `changed` leaves the value's bytes as
// they were), and a delete of a key that holds no live record leaves the fence-only tombstone
// of an earlier delete in place (with `fenceMemoryMs: 0` it is the only thing that holds the
// fence).
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import {
  type Client,
  countCommands,
  deletePrefix,
  randomPrefix,
  skipTarget,
  standalone,
} from './targets.js';

const owner = () => randomBytes(16).toString('base64url');
const input = (key: string, who: string) => ({
  key,
  fingerprint: 'fp',
  owner: who,
  leaseMs: 30_000,
  retentionMs: 60_000,
});

describe.skipIf(skipTarget(standalone))('delexp: admin delete with an expectation on Redis', () => {
  let client: Client;
  let raw: Client;
  let store: RedisStore;
  let bare: RedisStore;
  const prefix = randomPrefix();
  const barePrefix = randomPrefix();

  beforeAll(async () => {
    client = await standalone.connect();
    raw = await standalone.connect();
    store = createRedisStore({ client, keyPrefix: prefix });
    bare = createRedisStore({ client, keyPrefix: barePrefix, fenceMemoryMs: 0 });
  });
  afterAll(async () => {
    if (raw) {
      await deletePrefix(raw, prefix);
      await deletePrefix(raw, barePrefix);
    }
    client?.disconnect();
    raw?.disconnect();
  });

  it('decides in the one delete script: one command whether it deletes or answers changed', async () => {
    await store.admin.delete('warm', { fence: 1 }); // loads the script
    const failed = owner();
    await store.acquire(input('k', failed));
    await store.release({ key: 'k', owner: failed, retentionMs: 60_000 });
    const retry = owner();
    expect(await store.acquire(input('k', retry))).toMatchObject({ kind: 'acquired', fence: 2 });
    const bytes = await raw.getBuffer(store.redisKey('k'));
    const sent = countCommands(client);
    expect(await store.admin.delete('k', { status: 'released', owner: failed, fence: 1 })).toEqual({
      deleted: false,
      reason: 'changed',
      status: 'in_progress',
      owner: retry,
      fence: 2,
    });
    expect(sent.names).toEqual(['evalsha']);
    expect(await raw.getBuffer(store.redisKey('k'))).toEqual(bytes);
    sent.reset();
    expect(
      await store.admin.delete('k', { status: 'in_progress', owner: retry, fence: 2 }),
    ).toEqual({ deleted: true });
    expect(sent.names).toEqual(['evalsha']);
    expect(await raw.exists(store.redisKey('k'))).toBe(0);
    expect(await raw.get(store.fenceKey('k'))).toBe('2');
  });

  // FIXED (was FINDING LOW): with `fenceMemoryMs: 0` a deleted record leaves a tombstone that
  // holds only its fence until the record's own deadline (the store contract: the fence MUST
  // outlive the record that long). A second `delete` of the key (a runbook run twice, a retried
  // command whose first answer was lost) found that tombstone not live and DEL'd it: the next
  // acquisition began again at fence 1, and a fenced downstream that saw fence 3 refused it.
  it('fenceMemoryMs 0: a second delete keeps the fence-only tombstone, fences keep growing', async () => {
    for (const fence of [1, 2]) {
      const failed = owner();
      expect(await bare.acquire(input('twice', failed))).toMatchObject({ fence });
      await bare.release({ key: 'twice', owner: failed, retentionMs: 60_000 });
    }
    expect(await bare.acquire(input('twice', owner()))).toMatchObject({ fence: 3 });
    expect(await bare.admin.delete('twice')).toEqual({ deleted: true });
    expect(await bare.admin.delete('twice')).toEqual({ deleted: false });
    expect(await bare.admin.delete('twice', { fence: 3 })).toEqual({ deleted: false });
    expect(await raw.exists(bare.redisKey('twice'))).toBe(1);
    expect(await bare.acquire(input('twice', owner()))).toMatchObject({
      kind: 'acquired',
      fence: 4,
    });
  });
});
