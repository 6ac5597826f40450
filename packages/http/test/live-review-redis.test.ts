/**
 * Review tests of live streams on real Redis: isolation of the stream keys between stores
 * that share one Redis under different key prefixes (staging and production, two apps).
 */
import { randomBytes } from 'node:crypto';
import { createRedisLiveStreams, createRedisStore } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withIdempotency } from '../src/index.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const tag = randomBytes(6).toString('hex');
const clients: Redis[] = [];

async function connect(): Promise<Redis> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  clients.push(redis);
  try {
    await redis.connect();
    return redis;
  } catch (error) {
    throw new Error(
      `The Redis live-stream review tests need a Redis at ${url} (${String(error)}): start one (bash scripts/bootstrap.sh --services) or set REDIS_URL`,
    );
  }
}

let raw: Redis;
beforeAll(async () => {
  raw = await connect();
});
afterAll(async () => {
  for (const pattern of [`review-${tag}-*`, `*review-${tag}-*`]) {
    const keys = await raw.keys(pattern);
    if (keys.length > 0) await raw.del(...keys);
  }
  for (const redis of clients) redis.disconnect();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One app on the shared Redis: its own store prefix, the channel with its default key prefix. */
async function app(name: string, handler: (request: Request) => Promise<Response>) {
  const client = await connect();
  const blockingClient = await connect();
  const store = createRedisStore({ client, keyPrefix: `review-${tag}-${name}:` });
  return withIdempotency(handler, {
    store,
    scope: 'global',
    onWarning: () => {},
    liveStreams: { channel: createRedisLiveStreams({ client, blockingClient, store }) },
  });
}

const post = (key: string) =>
  new Request('http://localhost/chat', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body: '{}',
  });

describe('live streams on Redis: isolation between stores sharing one Redis', () => {
  it("a duplicate in another store (other key prefix) never reads this store's stream", async () => {
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const production = await app('prod', async () => {
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode('id: 1\ndata: production secret\n\n'));
        },
        async pull(controller) {
          await held;
          controller.close();
        },
      });
      return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
    });
    // The staging app's execution has not answered yet: nothing of its own to attach to.
    const staging = await app('staging', async () => {
      await held;
      return new Response('id: 1\ndata: staging\n\n', {
        headers: { 'content-type': 'text/event-stream' },
      });
    });
    const key = `iso-${tag}`;
    const streaming = await production(post(key));
    const reader = streaming.body?.getReader();
    await reader?.read();
    const running = staging(post(key));
    await sleep(100);
    const duplicate = await staging(post(key));
    const text = duplicate.body ? await readSome(duplicate.body) : '';
    release();
    await running;
    await reader?.cancel();
    expect(text).not.toContain('production secret');
    expect(duplicate.status).toBe(409);
  });
});

async function readSome(body: ReadableStream<Uint8Array>): Promise<string> {
  const reader = body.getReader();
  const first = await Promise.race([reader.read(), sleep(500).then(() => undefined)]);
  await reader.cancel().catch(() => {});
  return first && !first.done ? new TextDecoder().decode(first.value) : '';
}
