/**
 * The admin surface on Redis beyond the conformance suite: one round trip each, a record of
 * the earlier layout (a hash) force-released and deleted like one of this layout, and the
 * fence memory that keeps fences growing after `delete`; values no store wrote left as they are.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import {
  type Client,
  countCommands,
  deletePrefix,
  randomPrefix,
  rawRecord,
  redisNow,
  skipTarget,
  standalone,
} from './targets.js';

const owner = () => randomBytes(16).toString('base64url');
const acquireInput = (key: string, who = owner()) => ({
  key,
  fingerprint: 'fp',
  owner: who,
  leaseMs: 30_000,
  retentionMs: 60_000,
});

interface Header {
  status?: number;
  fence?: number;
  ownerLength?: number;
  expiresAt?: number;
}

/** A value of the documented layout (scripts.ts) with owner `o`, fingerprint `f`. */
function value(header: Header): Buffer {
  const now = Date.now();
  const head = Buffer.alloc(42);
  head[0] = 1;
  head[1] = header.status ?? 1;
  head.writeDoubleBE(header.fence ?? 1, 2);
  head.writeDoubleBE(now + 60_000, 10);
  head.writeDoubleBE(header.expiresAt ?? now + 120_000, 18);
  head.writeDoubleBE(0, 26);
  head.writeUInt32BE(header.ownerLength ?? 1, 34);
  head.writeUInt32BE(1, 38);
  return Buffer.concat([head, Buffer.from('of')]);
}

describe.skipIf(skipTarget(standalone))('admin on Redis (standalone)', () => {
  let client: Client;
  let raw: Client;
  let store: RedisStore;
  const prefix = randomPrefix();

  beforeAll(async () => {
    client = await standalone.connect();
    raw = await standalone.connect();
    store = createRedisStore({ client, keyPrefix: prefix });
  });
  afterAll(async () => {
    if (raw) await deletePrefix(raw, prefix);
    client?.disconnect();
    raw?.disconnect();
  });

  it('inspect, forceRelease and delete are one command each', async () => {
    await store.acquire(acquireInput('one'));
    await store.admin.inspect('one'); // loads the script: a first call may add SCRIPT LOAD
    await store.admin.forceRelease('warm');
    await store.admin.delete('warm');
    const sent = countCommands(client);
    await store.admin.inspect('one');
    expect(sent.count).toBe(1);
    sent.reset();
    expect((await store.admin.forceRelease('one')).ok).toBe(true);
    expect(sent.count).toBe(1);
    sent.reset();
    expect(await store.admin.delete('one')).toEqual({ deleted: true });
    expect(sent.names).toEqual(['evalsha']);
  });

  it('inspect reads a record without its outcome: a 4 MiB outcome is reported by size only', async () => {
    const key = store.redisKey('big');
    const outcome = Buffer.alloc(4 * 1024 * 1024, 7);
    await raw.set(key, Buffer.concat([value({ status: 2 }), outcome]), 'PX', 60_000);
    await store.admin.inspect('big'); // loads the script
    const socket = (client as unknown as { stream: { bytesRead: number } }).stream;
    const before = socket.bytesRead;
    expect(await store.admin.inspect('big')).toMatchObject({
      status: 'completed',
      owner: 'o',
      fingerprint: 'f',
      outcomeBytes: outcome.length,
    });
    // The reply carries the header, owner and fingerprint, not the 4 MiB (the whole value
    // took 1.3 s for 10 MB: an inspection bounded by the command timeout could fail on it).
    expect(socket.bytesRead - before).toBeLessThan(1024);
  });

  it('after delete the fence memory keeps fences growing', async () => {
    const first = await store.acquire(acquireInput('fenced'));
    expect(first).toMatchObject({ kind: 'acquired', fence: 1 });
    expect(await store.admin.forceRelease('fenced')).toMatchObject({ ok: true, fence: 2 });
    expect(await raw.get(store.fenceKey('fenced'))).toBe('2');
    expect(await store.admin.delete('fenced')).toEqual({ deleted: true });
    expect(await raw.exists(store.redisKey('fenced'))).toBe(0);
    expect(await store.acquire(acquireInput('fenced'))).toMatchObject({
      kind: 'acquired',
      fence: 3,
    });
  });

  it('a stuck record of the earlier layout (a hash) is force-released into this layout, then deleted', async () => {
    const now = await redisNow(raw);
    const key = store.redisKey('old');
    const stuck = owner();
    await raw.hset(key, 's', 'in_progress', 'fp', 'fp-old', 'o', stuck, 'f', '4');
    await raw.hset(key, 'lu', String(now + 30_000), 'ex', String(now + 90_000));
    await raw.pexpireat(key, now + 90_000 - 1);
    expect(await store.admin.inspect('old')).toMatchObject({
      status: 'in_progress',
      owner: stuck,
      fence: 4,
      fingerprint: 'fp-old',
    });
    expect(await store.admin.forceRelease('old')).toEqual({
      ok: true,
      fence: 5,
      previousOwner: stuck,
    });
    expect(await raw.type(key)).toBe('string');
    const record = await rawRecord(raw, key);
    // The tombstone keeps the stuck execution's logical request: a hash has no origin, so
    // its owner began it.
    expect(record).toMatchObject({
      status: 'released',
      fence: 5,
      fingerprint: 'fp-old',
      origin: stuck,
      expiresAt: now + 90_000,
    });
    expect(record?.owner).not.toBe(stuck);
    expect(await raw.pexpiretime(key)).toBe(now + 90_000 - 1);
    expect(
      await store.complete({
        key: 'old',
        owner: stuck,
        outcome: new Uint8Array(1),
        retentionMs: 1_000,
      }),
    ).toEqual({
      ok: false,
      reason: 'not_owner',
    });
    await raw.del(key);
    await raw.hset(key, 's', 'completed', 'fp', 'fp', 'o', stuck, 'f', '1');
    await raw.hset(key, 'lu', String(now), 'ex', String(now + 90_000));
    expect(await store.admin.forceRelease('old')).toEqual({ ok: false, reason: 'not_in_progress' });
    expect(await raw.type(key)).toBe('hash');
    expect(await store.admin.delete('old')).toEqual({ deleted: true });
    expect(await raw.exists(key)).toBe(0);
  });

  // clirev: an operator's forceRelease or delete (`idem release`, `idem delete`) on a value of
  // this layout that no store wrote (by hand, or corrupted) leaves it as it is and fails,
  // instead of carrying its header on into a tombstone (a NaN fence became the fence memory
  // -9223372036854778000) while the caller is told it failed, or that it worked.
  it.each([
    ['an unknown status', { status: 7 }],
    ['a NaN fence', { fence: Number.NaN }],
    ['a negative fence', { fence: -5 }],
    ['a fraction of a fence', { fence: 1.5 }],
    ['an infinite retention deadline', { expiresAt: Number.POSITIVE_INFINITY }],
    ['an owner length past the end', { ownerLength: 0xffff_ffff }],
  ] as const)('%s: forceRelease and delete write nothing and fail', async (_what, header) => {
    for (const action of ['forceRelease', 'delete'] as const) {
      const key = randomBytes(32).toString('hex');
      const redisKey = `${prefix}{${key}}`;
      const written = value(header);
      await raw.set(redisKey, written, 'PX', 120_000);
      await expect(store.admin[action](key)).rejects.toThrow(/malformed record/);
      expect((await raw.getBuffer(redisKey))?.equals(written)).toBe(true);
      expect(await raw.exists(`${redisKey}:fence`)).toBe(0);
    }
  });

  it('at fence 2^53 - 1: forceRelease writes nothing and fails (no fence left); delete works', async () => {
    const key = randomBytes(32).toString('hex');
    const redisKey = `${prefix}{${key}}`;
    const written = value({ fence: 2 ** 53 - 1 });
    await raw.set(redisKey, written, 'PX', 120_000);
    await expect(store.admin.forceRelease(key)).rejects.toThrow(/no fence left below 2\^53/);
    expect((await raw.getBuffer(redisKey))?.equals(written)).toBe(true);
    expect(await store.admin.delete(key)).toEqual({ deleted: true });
  });

  it('a record a store wrote at the largest fence a release can raise is still released', async () => {
    const key = randomBytes(32).toString('hex');
    await raw.set(`${prefix}{${key}}`, value({ fence: 2 ** 53 - 2 }), 'PX', 120_000);
    expect(await store.admin.forceRelease(key)).toEqual({
      ok: true,
      fence: 2 ** 53 - 1,
      previousOwner: 'o',
    });
  });
});
