/**
 * Adversarial review of wt/redisreplay (replay decided first, INCR + PEXPIREAT fence memory,
 * packed durations). The first describe holds the findings (failing); the second the attacks
 * that held (passing guards).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore } from '../src/index.js';
import {
  type Client,
  deletePrefix,
  randomPrefix,
  rawRecord,
  redisNow,
  setRawExpiresAt,
  standalone,
} from './targets.js';

const MAX = Number.MAX_SAFE_INTEGER;

let raw: Client;
const prefix = randomPrefix();
beforeAll(async () => {
  raw = await standalone.connect();
});
afterAll(async () => {
  await deletePrefix(raw, prefix);
  raw?.disconnect();
});

/** Header field `fm` (offset 26): until when the fence memory is meant to be kept. */
const headerFm = async (key: string) => (await raw.getBuffer(key))!.readDoubleBE(26);
const pexpiretime = async (key: string) => Number(await raw.call('PEXPIRETIME', key));

describe('redisreplay review: findings', () => {
  // LOW. The new free-key path sets the memory's expiry with PEXPIREAT fm (exact), but every
  // other writer (REMEMBER: takeover, tombstone, completion, extend) still uses SET PX (fm - now),
  // which Redis adds to its own later mstime: the memory key outlives header fm by 1 ms now and
  // then. Harmless direction, but not "exact to the ms" and not what the header says.
  it('fence memory expiry equals the header fm on every path (takeover, completion)', async () => {
    const store = createRedisStore({
      client: raw,
      keyPrefix: `${prefix}fm:`,
      fenceMemoryMs: 5_000,
    });
    const off: string[] = [];
    for (let i = 0; i < 600 && off.length === 0; i++) {
      const k = `k${i}`;
      await store.acquire({
        key: k,
        fingerprint: 'fp',
        owner: 'a',
        leaseMs: 1,
        retentionMs: 100_000,
      });
      await new Promise((resolve) => setTimeout(resolve, 2));
      const t = await store.acquire({
        key: k,
        fingerprint: 'fp',
        owner: 'b',
        leaseMs: 1_000,
        retentionMs: 200_000,
      });
      expect(t).toMatchObject({ kind: 'acquired', takeover: true });
      let gone = await pexpiretime(store.fenceKey(k));
      let fm = await headerFm(store.redisKey(k));
      if (gone !== fm) off.push(`takeover ${k}: PEXPIRETIME ${gone} vs fm ${fm}`);
      await store.complete({
        key: k,
        owner: 'b',
        outcome: new Uint8Array([1]),
        retentionMs: 300_000,
      });
      gone = await pexpiretime(store.fenceKey(k));
      fm = await headerFm(store.redisKey(k));
      if (gone !== fm) off.push(`complete ${k}: PEXPIRETIME ${gone} vs fm ${fm}`);
    }
    expect(off).toEqual([]);
  });

  // LOW (also on main). A fence past Number.MAX_SAFE_INTEGER: the script still writes an
  // in-progress record (a held lease) and the fence memory, then the client refuses the reply
  // (StoreUnavailableError). The key is stuck, and in Redis the fence repeats: the next
  // acquisition writes fence 2^53 again (the INCR result 2^53 + 1 rounds down in Lua), while the
  // memory says 2^53 + 1. A fence must never repeat; the script should refuse before writing.
  it('an acquisition that cannot take a safe fence writes nothing and never repeats a fence', async () => {
    const store = createRedisStore({
      client: raw,
      keyPrefix: `${prefix}huge:`,
      fenceMemoryMs: 60_000,
    });
    await raw.set(store.fenceKey('k'), String(MAX - 1), 'PX', 60_000);
    const first = await store.acquire({
      key: 'k',
      fingerprint: 'fp',
      owner: 'o0',
      leaseMs: 1_000,
      retentionMs: 1_000,
    });
    expect(first).toMatchObject({ kind: 'acquired', fence: MAX });
    await raw.del(store.redisKey('k')); // as admin delete / Redis dropping the expired record
    const fences: number[] = [];
    for (const owner of ['o1', 'o2']) {
      await expect(
        store.acquire({ key: 'k', fingerprint: 'fp', owner, leaseMs: 1_000, retentionMs: 1_000 }),
      ).rejects.toThrow();
      const written = await rawRecord(raw, store.redisKey('k'));
      if (written) fences.push(written.fence);
      await raw.del(store.redisKey('k'));
    }
    // Refused before any write: no record with an unsafe (and repeated) fence.
    expect(fences).toEqual([]);
  });
});

describe('redisreplay review: attacks that held', () => {
  const store = () =>
    createRedisStore({ client: raw, keyPrefix: `${prefix}held:`, fenceMemoryMs: 60_000 });

  it('a completed record past its retention (key still there) is not replayed; the fence grows', async () => {
    const s = store();
    await s.acquire({
      key: 'c',
      fingerprint: 'fp',
      owner: 'a',
      leaseMs: 1_000,
      retentionMs: 60_000,
    });
    await s.complete({ key: 'c', owner: 'a', outcome: new Uint8Array([7]), retentionMs: 60_000 });
    await setRawExpiresAt(raw, s.redisKey('c'), (await redisNow(raw)) - 1);
    const again = await s.acquire({
      key: 'c',
      fingerprint: 'fp',
      owner: 'b',
      leaseMs: 1_000,
      retentionMs: 1_000,
    });
    expect(again).toMatchObject({ kind: 'acquired', fence: 2, takeover: false });
  });

  it('a free key over a fence memory lower than a live record, and a record without memory', async () => {
    const s = store();
    await s.acquire({ key: 'm', fingerprint: 'fp', owner: 'a', leaseMs: 1, retentionMs: 60_000 });
    await raw.set(s.fenceKey('m'), '0');
    await new Promise((resolve) => setTimeout(resolve, 3));
    expect(
      await s.acquire({ key: 'm', fingerprint: 'fp', owner: 'b', leaseMs: 1, retentionMs: 60_000 }),
    ).toMatchObject({ kind: 'acquired', fence: 2, takeover: true });
    await raw.del(s.fenceKey('m'));
    await s.release({ key: 'm', owner: 'b', retentionMs: 60_000 });
    expect(
      await s.acquire({ key: 'm', fingerprint: 'fp', owner: 'c', leaseMs: 1, retentionMs: 60_000 }),
    ).toMatchObject({ kind: 'acquired', fence: 3 });
    await s.admin.delete('m');
    expect(
      await s.acquire({ key: 'm', fingerprint: 'fp', owner: 'd', leaseMs: 1, retentionMs: 60_000 }),
    ).toMatchObject({ kind: 'acquired', fence: 4 });
    expect(await raw.get(s.fenceKey('m'))).toBe('4');
  });

  it('durations at the edges: exact deadlines, typed refusals before any write', async () => {
    const s = store();
    for (const [i, [leaseMs, retentionMs]] of (<[number, number][]>[
      [0, 0],
      [1, 127],
      [128, 2 ** 31],
      [2 ** 31, 1],
      [0.5, 127.2],
    ]).entries()) {
      const before = await redisNow(raw);
      const r = await s.acquire({
        key: `d${i}`,
        fingerprint: 'fp',
        owner: 'o',
        leaseMs,
        retentionMs,
      });
      if (r.kind !== 'acquired') throw new Error('not acquired');
      expect(r.leaseUntil - Math.ceil(leaseMs)).toBeGreaterThanOrEqual(before);
      const rec = await rawRecord(raw, s.redisKey(`d${i}`));
      if (rec) expect(rec.expiresAt).toBe(r.leaseUntil + Math.ceil(retentionMs));
    }
    for (const bad of [
      -1,
      Number.NaN,
      Number.POSITIVE_INFINITY,
      MAX + 2,
      '5' as unknown as number,
    ]) {
      await expect(
        s.acquire({ key: 'bad', fingerprint: 'fp', owner: 'o', leaseMs: bad, retentionMs: 1 }),
      ).rejects.toMatchObject({ name: 'InvalidInputError' });
      await expect(
        s.complete({ key: 'bad', owner: 'o', outcome: new Uint8Array(), retentionMs: bad }),
      ).rejects.toMatchObject({ name: 'InvalidInputError' });
    }
    expect(await raw.exists(s.redisKey('bad'), s.fenceKey('bad'))).toBe(0);
  });
});
