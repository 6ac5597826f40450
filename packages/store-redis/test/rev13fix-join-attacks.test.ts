/**
 * rev13fix adversarial review of the chunk joining (621d666, 9bacc08): chunks waiting behind a
 * write in flight join into one entry, from a view of the recorder's capture. Attacks that
 * HELD (no finding): random chunk sizes over a capture that grows by reallocation (as
 * @idem/http's CaptureBuffer does), garbage written into the capture's spare capacity before
 * each chunk (memory the contract allows to be written), chunks with and without `body`
 * mixed, readers attached mid-stream at random points, a second generation (another fence)
 * published side by side, and the end racing the last joins. Every reader gets the same
 * bytes, contiguous offsets, entries of at most 64 KiB, then the end; the other generation
 * never shows up. Shared Redis on 6379, unique prefixes.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisLiveStreams, createRedisStore } from '../src/index.js';
import { deletePrefix, REDIS_URL } from './targets.js';

/** A capture as @idem/http keeps one: one growing buffer, doubled by a copy; views of it. */
class Capture {
  bytes = new Uint8Array(16);
  size = 0;
  append(chunk: Uint8Array): Uint8Array {
    if (this.size + chunk.length > this.bytes.length) {
      const next = new Uint8Array(Math.max(this.size + chunk.length, this.bytes.length * 2));
      next.set(this.bytes.subarray(0, this.size));
      this.bytes = next;
    }
    // Spare capacity is not yet body: scribble on it first (allowed), then write the chunk.
    this.bytes.fill(0xee, this.size);
    this.bytes.set(chunk, this.size);
    this.size += chunk.length;
    return this.bytes.subarray(0, this.size);
  }
}

let seed = 0x2f6b_a11d;
const random = (n: number) => {
  seed = (seed * 1_103_515_245 + 12_345) & 0x7fff_ffff;
  return seed % n;
};

describe('rev13fix: joined live-stream chunks under attack', () => {
  let client: Redis;
  let blocking: Redis;
  const tag = randomBytes(3).toString('hex');
  beforeAll(async () => {
    client = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    blocking = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await client.connect();
    await blocking.connect();
  });
  afterAll(async () => {
    await deletePrefix(client, `r13fxj-${tag}`);
    client?.disconnect();
    blocking?.disconnect();
  });

  it('readers attached at any point get the body byte for byte, in contiguous entries, then the end', {
    timeout: 30_000,
  }, async () => {
    const store = createRedisStore({ client, keyPrefix: `r13fxj-${tag}:` });
    const live = createRedisLiveStreams({
      client,
      blockingClient: blocking,
      store,
      keyPrefix: `r13fxj-${tag}-live:`,
      endGraceMs: 3_000,
    });
    const controller = new AbortController();
    const generation = { storageKey: 'k', fence: 7 };
    const other = { storageKey: 'k', fence: 8 };
    const publisher = live.publish({ ...generation, leaseMs: 20_000, signal: controller.signal });
    const otherPublisher = live.publish({ ...other, leaseMs: 20_000, signal: controller.signal });
    publisher.append({
      kind: 'head',
      status: 200,
      headers: [['content-type', 'text/event-stream']],
    });
    otherPublisher.append({ kind: 'head', status: 200, headers: [] });
    const capture = new Capture();
    const readAll = async () => {
      const reader = live.open(generation);
      const got: Buffer[] = [];
      let length = 0;
      let ended: boolean | undefined;
      for (let round = 0; round < 5_000 && ended === undefined; round++) {
        const read = await reader.next({ maxEntries: 7, waitMs: 500 });
        if (read.status === 'missing') break;
        if (read.status !== 'entries') continue;
        for (const entry of read.entries) {
          if (entry.kind === 'chunk') {
            expect(entry.offset).toBe(length);
            expect(entry.bytes.length).toBeLessThanOrEqual(64 * 1024);
            got.push(Buffer.from(entry.bytes));
            length += entry.bytes.length;
          } else if (entry.kind === 'end') ended = entry.ok;
          else expect(entry.kind).toBe('head');
        }
      }
      reader.close();
      return { bytes: Buffer.concat(got), ended };
    };
    const readers: Promise<{ bytes: Buffer; ended: boolean | undefined }>[] = [];
    const total = 1_500_000;
    let offset = 0;
    for (let burst = 0; offset < total && burst < 2_000; burst++) {
      // A burst of chunks in one tick (they join behind the write in flight), then a pause.
      const count = 1 + random(40);
      for (let i = 0; i < count && offset < total; i++) {
        const size = Math.min(
          total - offset,
          random(5) === 0 ? 1 + random(70_000) : 1 + random(300),
        );
        const chunk = randomBytes(size);
        const body = capture.append(chunk);
        // Some chunks come without the capture (a channel user that passes none).
        if (random(7) === 0) {
          const copy = new Uint8Array(chunk);
          publisher.append({ kind: 'chunk', offset, bytes: copy });
          copy.fill(0xdd); // the caller reuses its buffer at once
        } else publisher.append({ kind: 'chunk', offset, bytes: body.subarray(offset), body });
        otherPublisher.append({ kind: 'chunk', offset, bytes: new Uint8Array(size).fill(0x55) });
        offset += size;
      }
      if (random(3) === 0) readers.push(readAll());
      await new Promise((resolve) =>
        random(2) === 0 ? setImmediate(resolve) : setTimeout(resolve, 1),
      );
    }
    readers.push(readAll());
    // The end races the last joins: appended in the same tick as the last burst.
    await publisher.end(true);
    await otherPublisher.end(false);
    readers.push(readAll());
    const expected = Buffer.from(capture.bytes.subarray(0, capture.size));
    const results = await Promise.all(readers);
    console.log(
      `[rev13fix join] ${results.length} readers, ${expected.length} bytes, entries=${await client.xlen(
        `r13fxj-${tag}-live:${store.redisKey('k')}:7`,
      )}`,
    );
    for (const result of results) {
      expect(result.ended).toBe(true);
      expect(result.bytes.length).toBe(expected.length);
      expect(result.bytes.equals(expected)).toBe(true);
    }
    controller.abort();
  });
});
