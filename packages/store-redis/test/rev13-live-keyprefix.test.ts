/**
 * rev13 adversarial review: live streams on a Cluster whose ioredis client has a `keyPrefix`
 * (a common ioredis option; with a hash tag, `'{app}:'`, it keeps an app's keys in one slot).
 * The store's scripts get the prefix from ioredis like any command, so records work; the
 * waker's per-node lanes must read the same prefixed stream keys, in the slot they hash to.
 */
import { randomBytes } from 'node:crypto';
import { Cluster, Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import {
  createRedisLiveStreams,
  createRedisStore,
  recommendedRedisClusterOptions,
  recommendedRedisOptions,
} from '../src/index.js';
import { clusterPorts, clusterSkipReason, deletePrefix, REDIS_URL } from './targets.js';

describe.skipIf(!clusterPorts)(
  `rev13: live streams, Cluster client keyPrefix ${clusterSkipReason}`,
  () => {
    // FIXED (was FINDING MEDIUM, bounded time of a wake-up; fixed in src/xread-waker.ts: the
    // blocking client's keyPrefix is stripped from XREAD's answer, the Cluster lanes get it, and
    // the prefixed key is hashed): with a client built with ioredis's `keyPrefix`
    // (plain, 'app:', or with a hash tag, '{app}:'), standalone or Cluster, a reader waiting on a
    // live stream is never woken by its entries, only when its wait runs out (measured 2.85 s of
    // a 3 s wait, against 2-7 ms without the prefix), so every attached duplicate advances one
    // wait at a time. XREAD answers with the keys as Redis names them (prefixed), and the waker
    // looks its waiters up by the unprefixed key: none is found. On a Cluster, worse: the lanes
    // are `duplicate()`s of the Cluster's node connections, which carry no `keyPrefix` (ioredis
    // applies it at the Cluster level), so they wait on unprefixed keys nobody writes, and the
    // node is picked by hashing the unprefixed key, which a prefix with a hash tag moves.
    // Fix: strip the blocking client's keyPrefix from XREAD's answer, give the lanes the
    // Cluster's keyPrefix, and hash the prefixed key.
    it('a reader is woken by its entry within a second, whatever the client keyPrefix', {
      timeout: 30_000,
    }, async () => {
      const tag = randomBytes(3).toString('hex');
      const make = (keyPrefix: string) =>
        new Cluster(
          (clusterPorts ?? []).map((port) => ({ host: '127.0.0.1', port })),
          {
            ...recommendedRedisClusterOptions({ commandTimeoutMs: 2_000 }),
            lazyConnect: true,
            keyPrefix,
          },
        );
      const standalone = (keyPrefix: string) =>
        new Redis(REDIS_URL, { ...recommendedRedisOptions(), lazyConnect: true, keyPrefix });
      const waits: Record<string, number[]> = {};
      for (const [name, keyPrefix] of [
        ['standalone', `r13kp-${tag}:`],
        ['cluster', `r13kp-${tag}:`],
        ['cluster, tag', `{r13kp-${tag}}:`],
      ] as const) {
        const client = name === 'standalone' ? standalone(keyPrefix) : make(keyPrefix);
        const blocking = name === 'standalone' ? standalone(keyPrefix) : make(keyPrefix);
        client.on('error', () => {});
        blocking.on('error', () => {});
        await client.connect();
        await blocking.connect();
        const store = createRedisStore({ client, keyPrefix: 'idem:' });
        const live = createRedisLiveStreams({
          client,
          blockingClient: blocking,
          store,
          endGraceMs: 500,
        });
        const controller = new AbortController();
        waits[name] = [];
        try {
          for (const storageKey of ['a', 'b', 'c']) {
            const generation = { storageKey, fence: 1 };
            const publisher = live.publish({
              ...generation,
              leaseMs: 10_000,
              signal: controller.signal,
            });
            publisher.append({ kind: 'head', status: 200, headers: [] });
            const reader = live.open(generation);
            let read = await reader.next({ waitMs: 0, maxEntries: 10 });
            for (let i = 0; i < 50 && read.status !== 'entries'; i++) {
              await new Promise((resolve) => setTimeout(resolve, 20));
              read = await reader.next({ waitMs: 0, maxEntries: 10 });
            }
            expect(read.status).toBe('entries');
            const waiting = reader.next({ waitMs: 3_000, maxEntries: 10 });
            await new Promise((resolve) => setTimeout(resolve, 150));
            const sentAt = performance.now();
            publisher.append({ kind: 'chunk', offset: 0, bytes: new Uint8Array([1, 2, 3]) });
            expect((await waiting).status).toBe('entries');
            waits[name]?.push(Math.round(performance.now() - sentAt));
            await publisher.end(true);
            reader.close();
          }
        } finally {
          controller.abort();
          // Every key of this client's prefix, written through a raw client without one.
          const raw = name === 'standalone' ? standalone('') : make('');
          raw.on('error', () => {});
          await raw.connect();
          await deletePrefix(raw, keyPrefix);
          raw.disconnect();
          client.disconnect();
          blocking.disconnect();
        }
      }
      console.log(`[rev13 keyPrefix] wake ms ${JSON.stringify(waits)}`);
      for (const ms of Object.values(waits).flat()) expect(ms).toBeLessThan(1_000);
    });
  },
);
