/**
 * rev13fix adversarial review of the keyPrefix fix (7d5fbc7): the waker honours the
 * `blockingClient`'s ioredis keyPrefix; the publisher writes through `client`'s. The README
 * asks for the same prefix on both. What if they differ (the README's own example builds the
 * blocking connection with a bare `new Redis(url)`)? Standalone Redis on 6379, unique prefixes.
 */
import { randomBytes } from 'node:crypto';
import { InvalidInputError } from '@idem/core';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createRedisLiveStreams, createRedisStore, recommendedRedisOptions } from '../src/index.js';
import { primeReader } from './live-readers.js';
import { deletePrefix, REDIS_URL } from './targets.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('rev13fix: client and blockingClient with different ioredis keyPrefixes', () => {
  // FIXED (was FINDING LOW; fixed in src/redis-live-streams.ts: a pair whose ioredis
  // keyPrefixes differ is refused with InvalidInputError): `createRedisLiveStreams` accepted a `client` and a `blockingClient` whose
  // ioredis `keyPrefix`es differ (e.g. `client` built with `keyPrefix: 'app:'`, the blocking
  // connection with a bare `new Redis(url)` as in the README's example). The publisher writes
  // `app:idem:live:...` and the waker's XREAD waits on `idem:live:...` (its own prefix): no
  // reader is ever woken by an entry, only when its wait runs out (measured ~3 s of a 3 s
  // wait), silently: the very symptom the MEDIUM fix removed, back by a configuration the
  // README only asks to avoid. Reproduce: as below. Suggested fix: refuse the pair at
  // construction (InvalidInputError naming both prefixes), since no key can be waited on then.
  it('a pair with different keyPrefixes is refused, or its readers are still woken by entries', {
    timeout: 20_000,
  }, async () => {
    const tag = randomBytes(3).toString('hex');
    const clientPrefix = `r13fxkp-${tag}:`;
    const client = new Redis(REDIS_URL, {
      ...recommendedRedisOptions(),
      lazyConnect: true,
      keyPrefix: clientPrefix,
    });
    const blocking = new Redis(REDIS_URL, { ...recommendedRedisOptions(), lazyConnect: true });
    await client.connect();
    await blocking.connect();
    const store = createRedisStore({ client, keyPrefix: 'idem:' });
    const controller = new AbortController();
    try {
      let live: ReturnType<typeof createRedisLiveStreams>;
      try {
        live = createRedisLiveStreams({
          client,
          blockingClient: blocking,
          store,
          keyPrefix: `r13fxkp-live-${tag}:`,
          endGraceMs: 500,
        });
      } catch (error) {
        expect(error).toBeInstanceOf(InvalidInputError);
        return;
      }
      const generation = { storageKey: 'k', fence: 1 };
      const publisher = live.publish({ ...generation, leaseMs: 10_000, signal: controller.signal });
      publisher.append({ kind: 'head', status: 200, headers: [] });
      const reader = live.open(generation);
      expect((await primeReader(reader)).status).toBe('entries');
      const waiting = reader.next({ waitMs: 3_000, maxEntries: 10 });
      await sleep(150);
      const sentAt = performance.now();
      publisher.append({ kind: 'chunk', offset: 0, bytes: new Uint8Array([1, 2, 3]) });
      expect((await waiting).status).toBe('entries');
      const ms = performance.now() - sentAt;
      console.log(
        `[rev13fix keyPrefix mismatch] woken after ${Math.round(ms)} ms of a 3000 ms wait`,
      );
      await publisher.end(true);
      reader.close();
      expect(ms).toBeLessThan(1_000);
    } finally {
      controller.abort();
      await deletePrefix(blocking, clientPrefix);
      client.disconnect();
      blocking.disconnect();
    }
  });
});
