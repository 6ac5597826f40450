/**
 * Mutation audit (store-redis): the fence memory. README: the fence memory key is kept
 * `fenceMemoryMs` after the record's retention deadline, and is written again "when a renewal
 * or a late completion moves the record's retention deadline past what it covers". No test
 * compared the memory's expiry with the record's deadline after those writes: a script that
 * left the memory alone there (it then expires while, or soon after, the record does, and
 * fences restart at 1) passed every test. Nor did any test give the acquire script a fence
 * memory above the record's own fence.
 */
import { describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import { owner, standaloneSession } from './mutaudit-helpers.js';
import { keyGoneAt, rawRecord } from './targets.js';

const MEMORY = 60_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const ONE = new Uint8Array([1]);

const session = standaloneSession();

const freshStore = (fenceMemoryMs: number, keyPrefix = session.prefix()) =>
  createRedisStore({ client: session.client, keyPrefix, fenceMemoryMs });

/** One acquisition of `key` (fingerprint 'fp'). */
const take = (store: RedisStore, key: string, who: string, leaseMs: number, retentionMs: number) =>
  store.acquire({ key, fingerprint: 'fp', owner: who, leaseMs, retentionMs });

/** The fence memory holds the record's fence and outlives its deadline by `memory` ms. */
async function expectMemoryCovers(store: RedisStore, key: string, memory: number, what: string) {
  const record = await rawRecord(session.raw, store.redisKey(key));
  if (!record) throw new Error(`${what}: no record`);
  expect(await session.raw.get(store.fenceKey(key)), `${what}: remembered fence`).toBe(
    String(record.fence),
  );
  const gone = await keyGoneAt(session.raw, store.fenceKey(key));
  expect(gone, `${what}: memory kept until`).toBeGreaterThanOrEqual(record.expiresAt + memory);
  expect(gone, `${what}: memory dropped after`).toBeLessThanOrEqual(record.expiresAt + memory + 1);
}

/** Polls (bounded) until Redis has dropped the record key. */
async function untilGone(key: string, limitMs: number) {
  const started = performance.now();
  while ((await session.raw.exists(key)) === 1) {
    if (performance.now() - started > limitMs) throw new Error(`${key} still there`);
    await sleep(20);
  }
}

describe('mutaudit: the fence memory follows every deadline move', () => {
  it('renewal, late completion, long release, takeover and redelivery keep the memory fenceMemoryMs past the record', async () => {
    const store = freshStore(MEMORY);
    const short = { leaseMs: 1_000, retentionMs: 1_000 };

    // Renewal past what the acquisition covered.
    const a = owner();
    await store.acquire({ key: 'e', fingerprint: 'fp', owner: a, ...short });
    await expectMemoryCovers(store, 'e', MEMORY, 'acquisition');
    expect(
      (await store.extend({ key: 'e', owner: a, leaseMs: 300_000, retentionMs: 1_000 })).ok,
    ).toBe(true);
    await expectMemoryCovers(store, 'e', MEMORY, 'renewal');

    // A completion whose retention outlasts the acquisition's.
    const b = owner();
    await store.acquire({ key: 'c', fingerprint: 'fp', owner: b, ...short });
    expect(
      await store.complete({ key: 'c', owner: b, outcome: ONE, retentionMs: 600_000 }),
    ).toEqual({ ok: true });
    await expectMemoryCovers(store, 'c', MEMORY, 'completion');

    // A release whose tombstone outlasts the acquisition's record.
    const c = owner();
    await store.acquire({ key: 'r', fingerprint: 'fp', owner: c, ...short });
    expect(await store.release({ key: 'r', owner: c, retentionMs: 600_000 })).toEqual({
      ok: true,
    });
    await expectMemoryCovers(store, 'r', MEMORY, 'release');

    // A takeover and a redelivered acquire, each with a longer retention.
    await take(store, 't', owner(), 1, 1_000);
    await sleep(5);
    const d = owner();
    const taken = await take(store, 't', d, 1_000, 400_000);
    expect(taken).toMatchObject({ kind: 'acquired', takeover: true, fence: 2 });
    await expectMemoryCovers(store, 't', MEMORY, 'takeover');
    const again = await take(store, 't', d, 1_000, 800_000);
    expect(again).toMatchObject({ kind: 'acquired', takeover: false, fence: 2 });
    await expectMemoryCovers(store, 't', MEMORY, 'redelivered acquire');
  });

  it('after a renewal moved the record past what the memory covered, the fence continues once the record expired', async () => {
    // Memory 1 s: the acquisition's memory ends 1.2 s after it; the renewal moves the record
    // to about 2.6 s and the memory to about 3.6 s.
    const store = freshStore(1_000);
    const a = owner();
    const first = await take(store, 'k', a, 100, 100);
    expect(first).toMatchObject({ kind: 'acquired', fence: 1 });
    expect((await store.extend({ key: 'k', owner: a, leaseMs: 2_500, retentionMs: 100 })).ok).toBe(
      true,
    );
    await untilGone(store.redisKey('k'), 10_000);
    const next = await take(store, 'k', owner(), 1_000, 1_000);
    expect(next).toMatchObject({ kind: 'acquired', fence: 2 });
  });

  it('a fence memory above the record found is continued from (a process without fence memory restarted the key at 1)', async () => {
    const shared = session.prefix();
    const remembering = freshStore(MEMORY, shared);
    // Same keys, fenceMemoryMs 0: as during a configuration change rolled out process by process.
    const forgetting = freshStore(0, shared);
    const quick = { fingerprint: 'fp', leaseMs: 50, retentionMs: 50 };
    const seen: number[] = [];
    for (let i = 0; i < 3; i++) {
      const who = owner();
      const got = await remembering.acquire({ key: 'k', owner: who, ...quick });
      if (got.kind !== 'acquired') throw new Error('expected an acquisition');
      seen.push(got.fence);
      await remembering.release({ key: 'k', owner: who, retentionMs: 50 });
    }
    expect(seen).toEqual([1, 2, 3]);
    await untilGone(remembering.redisKey('k'), 5_000);
    expect(await session.raw.get(remembering.fenceKey('k'))).toBe('3');

    // Without memory the key restarts at 1 (documented), and leaves a tombstone with fence 1.
    const z = owner();
    expect(await forgetting.acquire({ key: 'k', owner: z, ...quick })).toMatchObject({
      kind: 'acquired',
      fence: 1,
    });
    expect(await forgetting.release({ key: 'k', owner: z, retentionMs: 60_000 })).toEqual({
      ok: true,
    });

    // The remembering store, over that tombstone, still continues above every fence it gave.
    const next = await remembering.acquire({ key: 'k', owner: owner(), ...quick });
    expect(next).toMatchObject({ kind: 'acquired', fence: 4 });
  });
});
