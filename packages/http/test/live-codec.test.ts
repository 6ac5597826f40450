/**
 * Live streams with an `outcomeCodec`: when the channel lost the rest of a generation (trimmed
 * after its end, a failed write), an attached reader bridges from the stored outcome. The
 * stored bytes are sealed by the codec (encrypted, compressed), so the bridge must open them
 * through the codec as the engine does; a stored not-recorded marker is never a body.
 * Memory store with an in-process channel, and real Redis (store and channel).
 */
import { randomBytes } from 'node:crypto';
import {
  createMemoryLiveStreams,
  createOutcomeCodec,
  type IdempotencyStore,
  type LiveReader,
  type LiveStreams,
  OutcomeTooLargeError,
} from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisLiveStreams, createRedisStore } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { LiveStreamBrokenError, withIdempotency } from '../src/index.js';
import { gatedChunks } from './support/streamed-bodies.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const encoder = new TextEncoder();
const codec = () =>
  createOutcomeCodec({ keys: [{ id: 'k1', key: new Uint8Array(randomBytes(32)) }] });

/**
 * An in-process channel whose readers lose the generation once it ended: the first read is
 * the channel's, every later read that would show the end answers `missing` (as a Redis
 * stream trimmed after its end does), so the reader must bridge from the stored outcome.
 */
function trimmingChannel(): LiveStreams {
  const inner = createMemoryLiveStreams();
  return {
    reach: inner.reach,
    publish: (input) => inner.publish(input),
    stats: () => inner.stats(),
    open(generation): LiveReader {
      const reader = inner.open(generation);
      let reads = 0;
      return {
        async next(options) {
          const read = await reader.next(options);
          reads++;
          if (reads === 1 || read.status !== 'entries') return read;
          if (read.entries.some((e) => e.kind === 'end')) return { status: 'missing' };
          // Entries before the end are dropped too: the rest must come from the store.
          return { status: 'idle' };
        },
        close: () => reader.close(),
      };
    },
  };
}

/** A streaming app: a first chunk, then (after `open`) the rest; counts runs. */
function streamingApp(
  store: IdempotencyStore,
  channel: LiveStreams,
  outcomeCodec: ReturnType<typeof createOutcomeCodec>,
  body: Uint8Array[],
) {
  let runs = 0;
  const gated = gatedChunks(body);
  const handle = withIdempotency(
    async () => {
      runs++;
      return new Response(gated.body(), { headers: { 'content-type': 'text/event-stream' } });
    },
    {
      store,
      scope: 'global',
      outcomeCodec,
      onWarning: () => {},
      liveStreams: { channel, blockMs: 50 },
    },
  );
  const post = (key: string) =>
    handle(
      new Request('http://localhost/chat', {
        method: 'POST',
        headers: { 'idempotency-key': key, 'content-type': 'application/json' },
        body: '{}',
      }),
    );
  return { post, open: gated.open, runs: () => runs };
}

const events = [
  encoder.encode('id: 1\ndata: first\n\n'),
  // Over the codec's compression threshold: the stored bytes are compressed and encrypted.
  encoder.encode(`id: 2\ndata: ${'x'.repeat(4000)}\n\n`),
];
const whole = Buffer.concat(events.map((e) => Buffer.from(e)));

describe('live streams with an outcomeCodec: the bridge from the stored outcome', () => {
  it('memory store: an attached reader whose generation vanished gets the whole body, opened through the codec', async () => {
    const store = createMemoryStore();
    const { post, open, runs } = streamingApp(store, trimmingChannel(), codec(), events);
    const first = await post('c1');
    await sleep(20);
    const second = await post('c1');
    expect(second.status).toBe(200);
    const firstBody = first.arrayBuffer();
    open();
    expect(Buffer.from(await firstBody).equals(whole)).toBe(true);
    const attached = Buffer.from(await second.arrayBuffer());
    expect(attached.equals(whole)).toBe(true);
    expect(runs()).toBe(1);
    // A later retry replays through the codec as well.
    const replay = await post('c1');
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(Buffer.from(await replay.arrayBuffer()).equals(whole)).toBe(true);
  });
});

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const tag = randomBytes(6).toString('hex');
const clients: Redis[] = [];
afterAll(async () => {
  const raw = clients[0];
  if (raw) {
    const keys = await raw.keys(`*rev17codec-${tag}*`);
    if (keys.length > 0) await raw.del(...keys);
  }
  for (const client of clients) client.disconnect();
});

async function connect(): Promise<Redis> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  clients.push(redis);
  await redis.connect();
  return redis;
}

describe('live streams with an outcomeCodec on real Redis', () => {
  it('the stream trimmed after its end: the attached reader bridges from the sealed outcome', async () => {
    const client = await connect();
    const blockingClient = await connect();
    const store = createRedisStore({ client, keyPrefix: `rev17codec-${tag}:` });
    const channel = createRedisLiveStreams({
      client,
      blockingClient,
      store,
      keyPrefix: `rev17codec-${tag}-live:`,
    });
    const { post, open, runs } = streamingApp(store, channel, codec(), events);
    const first = await post('r1');
    await sleep(50);
    const second = await post('r1');
    expect(second.status).toBe(200);
    const firstBody = first.arrayBuffer();
    const reader = (second.body as ReadableStream<Uint8Array>).getReader();
    const head = await reader.read();
    open();
    expect(Buffer.from(await firstBody).equals(whole)).toBe(true);
    // The generation vanished before the attached reader read the rest (trimmed after its end).
    const liveKeys = await client.keys(`rev17codec-${tag}-live:*`);
    expect(liveKeys.length).toBeGreaterThan(0);
    await client.del(...liveKeys);
    const parts: Uint8Array[] = head.value ? [head.value] : [];
    for (;;) {
      const next = await reader.read();
      if (next.done) break;
      parts.push(next.value);
    }
    expect(Buffer.concat(parts).equals(whole)).toBe(true);
    expect(runs()).toBe(1);
  });
});

describe('live streams: a stored not-recorded marker is never a body', () => {
  it('the bridge finds the marker of its generation: the attached body ends with LiveStreamBrokenError', async () => {
    // A store whose own limit refuses the outcome: core records the (plain) marker instead.
    const inner = createMemoryStore();
    let refused = false;
    const store: IdempotencyStore = Object.assign(Object.create(inner), {
      complete: async (input: Parameters<IdempotencyStore['complete']>[0]) => {
        if (!refused) {
          refused = true;
          throw new OutcomeTooLargeError(input.outcome.length, 10);
        }
        return inner.complete(input);
      },
    });
    const { post, open, runs } = streamingApp(store, trimmingChannel(), codec(), events);
    const first = await post('m1');
    await sleep(20);
    const second = await post('m1');
    const firstBody = first.arrayBuffer();
    open();
    await firstBody;
    const error = await second.arrayBuffer().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(LiveStreamBrokenError);
    expect((error as Error).message).toMatch(/its outcome was not recorded/);
    expect(runs()).toBe(1);
  });
});
