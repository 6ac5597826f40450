/**
 * rev13 adversarial review: what a live stream costs Redis when the response comes in tiny
 * chunks. `@idem/http` appends every captured chunk; the README says a stream holds the
 * response's bytes (up to the outcome cap).
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisLiveStreams, createRedisStore } from '../src/index.js';
import { REDIS_URL } from './targets.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('rev13: live stream of tiny chunks', () => {
  let client: Redis;
  let blocking: Redis;
  beforeAll(async () => {
    client = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    blocking = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await client.connect();
    await blocking.connect();
  });
  afterAll(() => {
    client?.disconnect();
    blocking?.disconnect();
  });

  // FIXED (was FINDING LOW, bounded memory; fixed in src/redis-live-streams.ts: a chunk that
  // continues the chunk queued last joins it, one entry per write): each appended chunk becomes one stream entry of its own,
  // also when many chunks wait together behind a write in flight (they go in one MULTI, one
  // XADD each). A response written in 1-byte chunks costs Redis about 25 times its bytes
  // (measured: 200,000 one-byte chunks, 200,001 entries, 4.9 MB of MEMORY USAGE for 200 KB;
  // 16-byte chunks 2.5x), held for the lease or the end grace, and a reader needs one XRANGE
  // per `maxEntries` entries to catch up. With the outcome cap at a few MiB, one generation
  // can take ~100 MB of a Redis that the store's records share (under noeviction: new keys
  // then get STORE_FULL). Reproduce: publish, append 150,000 one-byte chunks in one tick, XLEN.
  // Fix: merge the contiguous chunks of a batch into one entry (the `body` the recorder hands
  // over is the whole capture, so the merged bytes are one view of it).
  it('chunks that wait together behind a write in flight are written as few entries, near the response size in Redis memory', {
    timeout: 20_000,
  }, async () => {
    const store = createRedisStore({
      client,
      keyPrefix: `r13lc:${randomBytes(3).toString('hex')}:`,
    });
    const live = createRedisLiveStreams({
      client,
      blockingClient: blocking,
      store,
      keyPrefix: 'r13live:',
    });
    const controller = new AbortController();
    const generation = { storageKey: 'k', fence: 1 };
    const key = `r13live:${store.redisKey('k')}:1`;
    const publisher = live.publish({ ...generation, leaseMs: 30_000, signal: controller.signal });
    try {
      publisher.append({ kind: 'head', status: 200, headers: [] });
      const total = 150_000;
      const body = new Uint8Array(total);
      for (let i = 0; i < total; i++) body[i] = 97 + (i % 26);
      // One tick: the head's write is in flight, every chunk waits behind it.
      for (let offset = 0; offset < total; offset++) {
        publisher.append({ kind: 'chunk', offset, bytes: body.subarray(offset, offset + 1), body });
      }
      await publisher.end(true);
      // Everything a reader gets: the same bytes, in order.
      const reader = live.open(generation);
      const got: number[] = [];
      let ended = false;
      for (let round = 0; round < 30_000 && !ended; round++) {
        const read = await reader.next({ maxEntries: 1_000, waitMs: 0 });
        if (read.status !== 'entries') break;
        for (const entry of read.entries) {
          if (entry.kind === 'chunk') {
            expect(entry.offset).toBe(got.length);
            // Joined entries stay small (64 KiB at most) next to any proto-max-bulk-len.
            expect(entry.bytes.length).toBeLessThanOrEqual(64 * 1024);
            got.push(...entry.bytes);
          } else if (entry.kind === 'end') ended = entry.ok;
        }
      }
      reader.close();
      expect(ended).toBe(true);
      expect(Buffer.from(got).equals(Buffer.from(body))).toBe(true);
      const entries = await client.xlen(key);
      const bytes = Number(await client.memory('USAGE', key, 'SAMPLES', '0'));
      console.log(`[rev13 live chunks] entries=${entries} redisBytes=${bytes} body=${total}`);
      expect(entries).toBeLessThanOrEqual(10);
      expect(bytes).toBeLessThan(3 * total + 4_096);
    } finally {
      controller.abort();
      await sleep(10);
      await client.del(key);
    }
  });
});
