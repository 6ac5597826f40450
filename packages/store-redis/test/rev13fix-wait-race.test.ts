/**
 * rev13fix adversarial review of the waker (around the keyPrefix and lane fixes): two readers
 * of one channel (two attached duplicates of two keys) that start waiting in the same tick.
 * Standalone Redis on 6379, unique prefixes.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createRedisLiveStreams, createRedisStore, recommendedRedisOptions } from '../src/index.js';
import { openReaderPair, wakeInTurns } from './live-readers.js';
import { deletePrefix, REDIS_URL } from './targets.js';

describe('rev13fix: readers that start waiting together', () => {
  // FIXED (was FINDING MEDIUM, bounded time of a wake-up; fixed in src/xread-waker.ts: a
  // standalone round takes its keys after it awaited the blocking connection's id, with no
  // await between them and `inRound`): the waker's loop took the keys of a round, then awaited
  // the blocking connection's id (a promise, so at least a microtask; a round trip after a
  // reconnect), then marked the round on. A reader that started waiting in that gap (the
  // second of two readers whose XRANGEs are answered in one reply: attached duplicates of two
  // keys, readers polling together) was neither in the round nor able to end it (no UNBLOCK
  // while no round is on): it was woken by its wait running out, not by its entry: measured
  // 832-898 ms of a 1 s block instead of ~5 ms, every other wake; the symptom of the MEDIUM
  // findings of rev13, on every standalone deployment. Reproduce: as below.
  it('two readers that start waiting in one tick are both woken by their entries', {
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
      const store = createRedisStore({ client, keyPrefix: `r13fxw-${tag}:` });
      const live = createRedisLiveStreams({
        client,
        blockingClient: blocking,
        store,
        keyPrefix: `r13fxw-${tag}-live:`,
      });
      const a = { storageKey: 'a', fence: 1 };
      const b = { storageKey: 'b', fence: 1 };
      const pair = await openReaderPair([live, a], [live, b], controller.signal);
      waits.push(...(await wakeInTurns(pair)));
    } finally {
      controller.abort();
      await deletePrefix(client, `r13fxw-${tag}`);
      client.disconnect();
      blocking.disconnect();
    }
    console.log(`[rev13fix wait race] wake ms ${waits.join(' ')}`);
    for (const wait of waits) expect(Number(wait.split(':')[1])).toBeLessThan(500);
  });
});
