/**
 * rev13fix adversarial review of the keyPrefix fix (7d5fbc7): two stores under other prefixes
 * on one Redis, each with its live channel, the ioredis clients carrying a keyPrefix. Do
 * readers of one get woken by their own entries only, and promptly, when the channels share
 * the `client` (the README: "the store's client will do")? Standalone Redis on 6379.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createRedisLiveStreams, createRedisStore, recommendedRedisOptions } from '../src/index.js';
import { openReaderPair, wakeInTurns } from './live-readers.js';
import { deletePrefix, REDIS_URL } from './targets.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('rev13fix: two stores, two channels, ioredis keyPrefix', () => {
  it('each channel wakes its readers by its own entries, never by the other store’s', {
    timeout: 20_000,
  }, async () => {
    const tag = randomBytes(3).toString('hex');
    const ioPrefix = `r13fx2-${tag}:`;
    const make = () =>
      new Redis(REDIS_URL, {
        ...recommendedRedisOptions(),
        lazyConnect: true,
        keyPrefix: ioPrefix,
      });
    const client = make();
    const blockingA = make();
    const blockingB = make();
    for (const c of [client, blockingA, blockingB]) await c.connect();
    const controller = new AbortController();
    try {
      const storeA = createRedisStore({ client, keyPrefix: 'staging:' });
      const storeB = createRedisStore({ client, keyPrefix: 'production:' });
      const liveA = createRedisLiveStreams({ client, blockingClient: blockingA, store: storeA });
      const liveB = createRedisLiveStreams({ client, blockingClient: blockingB, store: storeB });
      const generation = { storageKey: 'same', fence: 1 };
      const { pubA, readerA, readerB } = await openReaderPair(
        [liveA, generation],
        [liveB, generation],
        controller.signal,
        [200, 201],
      );
      const headA = await readerA.next({ waitMs: 0, maxEntries: 10 });
      const headB = await readerB.next({ waitMs: 0, maxEntries: 10 });
      expect(
        headA.status === 'entries' && headA.entries[0]?.kind === 'head' && headA.entries[0].status,
      ).toBe(200);
      expect(
        headB.status === 'entries' && headB.entries[0]?.kind === 'head' && headB.entries[0].status,
      ).toBe(201);
      // B's reader waits; only A gets an entry: B must not be woken with entries (idle at its wait's end).
      const waitingA = readerA.next({ waitMs: 3_000, maxEntries: 10 });
      const waitingB = readerB.next({ waitMs: 1_500, maxEntries: 10 });
      await sleep(150);
      const sentAt = performance.now();
      pubA.append({ kind: 'chunk', offset: 0, bytes: new Uint8Array([65]) });
      const gotA = await waitingA;
      const msA = performance.now() - sentAt;
      const gotB = await waitingB;
      expect(gotA.status).toBe('entries');
      expect(msA).toBeLessThan(1_000);
      expect(gotB.status).toBe('idle');
      readerA.close();
      readerB.close();
      console.log(
        `[rev13fix two stores] A woken after ${Math.round(msA)} ms; B stayed ${gotB.status}`,
      );
    } finally {
      controller.abort();
      const raw = new Redis(REDIS_URL, { ...recommendedRedisOptions(), lazyConnect: true });
      await raw.connect();
      await deletePrefix(raw, ioPrefix);
      raw.disconnect();
      for (const c of [client, blockingA, blockingB]) c.disconnect();
    }
  });
  // FIXED (was FINDING LOW, bounded time of a wake-up; fixed in src/redis-live-streams.ts:
  // one waker per blocking connection, shared by the channels that name it): two channels (two stores under other prefixes,
  // "staging" and "production", or two apps in one process) given the same `blockingClient`
  // (the README only says "another connection" than `client`; nothing refuses a shared one)
  // each run their own XREAD BLOCK loop on that one connection: one waker's XREAD waits behind
  // the other's block, so a reader of one store is woken by its entry only when the other
  // store's round ends: measured 874-912 ms (blockMs 1000) instead of ~5 ms, every other wake.
  // Reproduce: as below. Suggested fix: one waker per blocking connection (a WeakMap from the
  // blockingClient to its waker, shared by the channels that name it), or refuse a
  // blockingClient already in use by another channel with InvalidInputError.
  it('two channels sharing one blockingClient both wake their readers by their entries promptly', {
    timeout: 25_000,
  }, async () => {
    const tag = randomBytes(3).toString('hex');
    const client = new Redis(REDIS_URL, { ...recommendedRedisOptions(), lazyConnect: true });
    const blocking = new Redis(REDIS_URL, { ...recommendedRedisOptions(), lazyConnect: true });
    await client.connect();
    await blocking.connect();
    const controller = new AbortController();
    const waits: string[] = [];
    try {
      const channel = (name: string) =>
        createRedisLiveStreams({
          client,
          blockingClient: blocking,
          store: createRedisStore({ client, keyPrefix: `r13fxs-${tag}-${name}:` }),
          keyPrefix: `r13fxs-${tag}-live:`,
        });
      const liveA = channel('staging');
      const liveB = channel('production');
      const generation = { storageKey: 's', fence: 1 };
      const pair = await openReaderPair(
        [liveA, generation],
        [liveB, generation],
        controller.signal,
      );
      waits.push(...(await wakeInTurns(pair)));
    } finally {
      controller.abort();
      await deletePrefix(client, `r13fxs-${tag}`);
      client.disconnect();
      blocking.disconnect();
    }
    console.log(`[rev13fix shared blockingClient] wake ms ${waits.join(' ')}`);
    for (const wait of waits) expect(Number(wait.split(':')[1])).toBeLessThan(500);
  });
});
