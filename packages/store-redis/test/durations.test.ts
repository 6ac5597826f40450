/**
 * The durations the client packs into one script argument (eight base-128 digits each)
 * reach the scripts exactly, from 0 to Number.MAX_SAFE_INTEGER, and through the store the
 * deadlines are the durations apart.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore } from '../src/index.js';
import { packDurations, unpackDurations } from '../src/scripts.js';
import { type Client, deletePrefix, randomPrefix, rawRecord, standalone } from './targets.js';

const EDGES = [
  0,
  1,
  127,
  128,
  16_383,
  16_384,
  30_000,
  86_400_000,
  2 ** 31 - 1,
  2 ** 32 + 1,
  2 ** 49 + 12_345,
  Number.MAX_SAFE_INTEGER - 1,
  Number.MAX_SAFE_INTEGER,
];

describe('packed durations', () => {
  let raw: Client;
  const prefix = randomPrefix();
  beforeAll(async () => {
    raw = await standalone.connect();
  });
  afterAll(async () => {
    await deletePrefix(raw, prefix);
    raw?.disconnect();
  });

  it('every char is below 0x80 (sent as is, in ioredis string mode), eight per duration', () => {
    const packed = packDurations(...EDGES);
    expect(packed).toHaveLength(8 * EDGES.length);
    expect([...packed].every((c) => c.charCodeAt(0) < 0x80)).toBe(true);
    expect(Buffer.byteLength(packed)).toBe(packed.length);
  });

  it('decode in Lua to the very integers', async () => {
    for (let i = 0; i + 3 <= EDGES.length; i++) {
      const three = EDGES.slice(i, i + 3);
      const lua = `${unpackDurations(1, 'x', 'y', 'z')}
return {string.format('%d', x), string.format('%d', y), string.format('%d', z)}`;
      const decoded = (await raw.eval(lua, 0, packDurations(...three))) as string[];
      expect(decoded.map(Number)).toEqual(three);
    }
  });

  it('through the store: leaseUntil, expiresAt and the fence memory are the durations apart', async () => {
    const store = createRedisStore({
      client: raw,
      keyPrefix: prefix,
      fenceMemoryMs: 2 ** 33 + 5,
    });
    const owner = randomBytes(8).toString('hex');
    const retentionMs = 2 ** 40 + 3;
    const leaseMs = 2 ** 32 + 7;
    const redisNow = async () => {
      const [seconds, micros] = await raw.time();
      return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    };
    const before = await redisNow();
    const acquired = await store.acquire({
      key: 'k',
      fingerprint: 'fp',
      owner,
      leaseMs,
      retentionMs,
    });
    const after = await redisNow();
    if (acquired.kind !== 'acquired') throw new Error('not acquired');
    expect(acquired.leaseUntil - leaseMs).toBeGreaterThanOrEqual(before);
    expect(acquired.leaseUntil - leaseMs).toBeLessThanOrEqual(after);
    const record = await rawRecord(raw, store.redisKey('k'));
    expect(record?.expiresAt).toBe(acquired.leaseUntil + retentionMs);
    const fenceGone = Number(await raw.call('PEXPIRETIME', store.fenceKey('k')));
    expect(fenceGone).toBe(record!.expiresAt + 2 ** 33 + 5);

    await store.complete({ key: 'k', owner, outcome: new Uint8Array([1]), retentionMs: 12_345 });
    const found = await store.acquire({
      key: 'k',
      fingerprint: 'fp',
      owner: 'another',
      leaseMs: 1,
      retentionMs: 1,
    });
    if (found.kind !== 'found') throw new Error('not found');
    expect(found.record.expiresAt - found.now).toBeGreaterThan(12_345 - 2_000);
    expect(found.record.expiresAt - found.now).toBeLessThanOrEqual(12_345);
  });
});
