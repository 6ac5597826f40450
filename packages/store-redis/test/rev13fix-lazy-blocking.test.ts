/**
 * rev13fix adversarial review of the waker: a `blockingClient` left to connect by itself
 * (`lazyConnect: true`, never `connect()`ed: the waker's first call connects it).
 * Standalone Redis on 6379, unique prefixes.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createRedisLiveStreams, createRedisStore } from '../src/index.js';
import { openReaderPair } from './live-readers.js';
import { deletePrefix, REDIS_URL } from './targets.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('rev13fix: a lazily connected blockingClient', () => {
  // FIXED (was FINDING LOW, bounded time of a wake-up; fixed in src/xread-waker.ts: the id
  // is forgotten on a reconnect only, not on the first 'ready'): the waker forgot the blocking connection's id
  // on every 'ready' (to ask again after a reconnect). A blockingClient that is connected by
  // the waker's own first CLIENT ID (lazyConnect, not connected by the application) fires its
  // first 'ready' while that call is in flight: the id is forgotten, and the first round's
  // UNBLOCK has to ask CLIENT ID on the blocked connection, answered only after the block: a
  // reader that starts waiting during that round is woken ~blockMs late. The same pattern the
  // Cluster lanes had (fixed: rev13fix-fresh-lane). Suggested fix: forget the id on a
  // reconnect only (not on the first 'ready').
  it('a reader that starts waiting during the first round is woken by its entry', {
    timeout: 20_000,
  }, async () => {
    const tag = randomBytes(3).toString('hex');
    const client = new Redis(REDIS_URL, { lazyConnect: true });
    const blocking = new Redis(REDIS_URL, { lazyConnect: true });
    await client.connect();
    const controller = new AbortController();
    let ms = -1;
    try {
      const store = createRedisStore({ client, keyPrefix: `r13fxz-${tag}:` });
      const live = createRedisLiveStreams({
        client,
        blockingClient: blocking,
        store,
        keyPrefix: `r13fxz-${tag}-live:`,
        blockMs: 3_000,
      });
      const a = { storageKey: 'a', fence: 1 };
      const b = { storageKey: 'b', fence: 1 };
      const { pubB, readerA, readerB } = await openReaderPair(
        [live, a],
        [live, b],
        controller.signal,
      );
      await readerA.next({ waitMs: 0, maxEntries: 10 });
      await readerB.next({ waitMs: 0, maxEntries: 10 });
      const waitingA = readerA.next({ waitMs: 6_000, maxEntries: 10 });
      await sleep(300);
      const waitingB = readerB.next({ waitMs: 6_000, maxEntries: 10 });
      await sleep(100);
      const sentAt = performance.now();
      pubB.append({ kind: 'chunk', offset: 0, bytes: new Uint8Array([1]) });
      expect((await waitingB).status).toBe('entries');
      ms = performance.now() - sentAt;
      controller.abort();
      await waitingA;
      readerA.close();
      readerB.close();
    } finally {
      controller.abort();
      await deletePrefix(client, `r13fxz-${tag}`);
      client.disconnect();
      blocking.disconnect();
    }
    console.log(`[rev13fix lazy blocking] woken after ${Math.round(ms)} ms (blockMs 3000)`);
    expect(ms).toBeLessThan(1_000);
  });
});
