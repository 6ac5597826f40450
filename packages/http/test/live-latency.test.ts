/**
 * An attached reader never waits for a poll or block interval: the backlog comes with the
 * attach, and a chunk published after the reader attached reaches it as soon as it is
 * published. Measured with a deliberately long wait on the channel (blockMs 5 s, anchorWaitMs
 * 5 s) so a regression shows as seconds, not as a tight timing. On Redis the duplicate is
 * answered by a second handler with its own store, channel and connections (another
 * process, as far as the channel can tell).
 */
import { createMemoryLiveStreams, type IdempotencyStore, type LiveStreams } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisLiveStreams, createRedisStore } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { withIdempotency } from '../src/index.js';
import { fedEventStream } from './support/streamed-bodies.js';

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const connections: Redis[] = [];
afterAll(() => {
  for (const connection of connections) connection.disconnect();
});

const LONG_MS = 5_000;
const encoder = new TextEncoder();
const event = (n: number) => encoder.encode(`id: ${n}\ndata: token ${n}\n\n`);

/** A handler whose streamed body is fed by the test, chunk by chunk. */
function app(store: IdempotencyStore, channel: LiveStreams) {
  const feeds: ReadableStreamDefaultController<Uint8Array>[] = [];
  const handle = withIdempotency(async () => fedEventStream(feeds), {
    store,
    scope: () => ({ principal: 'p' }),
    onWarning: () => {},
    liveStreams: { channel, blockMs: LONG_MS, anchorWaitMs: LONG_MS },
  });
  return { handle, feeds };
}

const post = (key: string, headers: Record<string, string> = {}) =>
  new Request('http://127.0.0.1/stream', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json', ...headers },
    body: '{}',
  });

function redisPair() {
  const prefix = `idem-live-latency:${process.pid}:${Date.now()}:`;
  const side = () => {
    const [client, blockingClient] = [0, 1].map(
      () => new Redis(redisUrl, { maxRetriesPerRequest: 1 }),
    ) as [Redis, Redis];
    connections.push(client, blockingClient);
    const store = createRedisStore({ client, keyPrefix: prefix });
    return app(
      store,
      createRedisLiveStreams({ client, blockingClient, store, blockMs: LONG_MS, endGraceMs: 200 }),
    );
  };
  return { first: side(), second: side() };
}

function memoryPair() {
  const one = app(createMemoryStore(), createMemoryLiveStreams());
  return { first: one, second: one };
}

describe.each([
  { name: 'memory', make: memoryPair },
  { name: 'Redis, the duplicate on a second handler', make: redisPair },
])('live streams: no wait on the path of an attached reader ($name)', ({ make }) => {
  it('the attach answers with the backlog at once, and each later chunk arrives when published', async () => {
    const { first, second } = make();
    const key = `lat-${Math.random().toString(36).slice(2)}`;
    const original = await first.handle(post(key));
    const feed = first.feeds[0] as ReadableStreamDefaultController<Uint8Array>;
    const firstReader = original.body!.getReader();
    for (const n of [1, 2, 3]) feed.enqueue(event(n));
    const seen = new TextDecoder();
    let firstText = '';
    while (!firstText.includes('token 3'))
      firstText += seen.decode((await firstReader.read()).value);

    // A resume after event 2: the backlog (event 3) is there, nothing to wait for.
    // The first caller keeps reading (attached readers go at the pace the first response is
    // taken: by its client, or drained by the server once that client is gone).
    const firstRest = (async () => {
      for (;;) if ((await firstReader.read()).done) return;
    })();
    let started = performance.now();
    const attached = await second.handle(post(key, { 'last-event-id': '2' }));
    expect(attached.status).toBe(200);
    const reader = attached.body!.getReader();
    const backlog = new TextDecoder().decode((await reader.read()).value);
    const attachMs = performance.now() - started;
    expect(backlog).toBe('id: 3\ndata: token 3\n\n');

    // The reader now waits on the channel (for up to 5 s); each chunk published wakes it.
    const delays: number[] = [];
    for (const n of [4, 5, 6, 7, 8]) {
      const read = reader.read();
      await new Promise((resolve) => setTimeout(resolve, 30));
      started = performance.now();
      feed.enqueue(event(n));
      expect(new TextDecoder().decode((await read).value)).toBe(`id: ${n}\ndata: token ${n}\n\n`);
      delays.push(performance.now() - started);
    }
    feed.close();
    await firstRest;
    await reader.cancel();
    // A missed wake-up costs a whole 5 s wait; a loaded machine costs tens of ms.
    expect(attachMs).toBeLessThan(LONG_MS / 2);
    expect(Math.max(...delays)).toBeLessThan(LONG_MS / 2);
  }, 30_000);
});

describe('live streams: a first caller that stops reading', () => {
  // The recorder reads the handler's body ahead of a first caller that stopped reading (its
  // connection died silently, no RST: it stays "alive" until its socket buffer is full and
  // its TCP gives up) while the generation is published; the first caller is served from
  // the capture. Seen failing (stalled) when the body was read at the first caller's pace.
  it('an attached reader still gets the rest as it is produced', async () => {
    const { first: side } = memoryPair();
    const key = `stop-${Math.random().toString(36).slice(2)}`;
    const original = await side.handle(post(key));
    const feed = side.feeds[0] as ReadableStreamDefaultController<Uint8Array>;
    feed.enqueue(event(1));
    const firstReader = original.body!.getReader();
    await firstReader.read();
    // The first caller reads no more (and does not cancel either).
    const attached = await side.handle(post(key, { 'last-event-id': '1' }));
    const reader = attached.body!.getReader();
    for (const n of [2, 3, 4, 5]) feed.enqueue(event(n));
    feed.close();
    const rest = (async () => {
      let text = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return text;
        text += new TextDecoder().decode(value);
      }
    })();
    const within = await Promise.race([
      rest,
      new Promise((resolve) => setTimeout(resolve, 2_000, 'stalled')),
    ]);
    await firstReader.cancel();
    expect(within).toContain('token 5');
  }, 30_000);
});

describe('live streams: reading ahead of the first caller', () => {
  /** A handler whose body makes `total` chunks on demand (pull), counting the pulls. */
  function pulled(contentType: string, total: number, size: number, maxOutcomeBytes?: number) {
    const state = { pulls: 0 };
    const handle = withIdempotency(
      async () =>
        new Response(
          new ReadableStream<Uint8Array>(
            {
              async pull(controller) {
                await new Promise((resolve) => setTimeout(resolve, 1));
                if (state.pulls >= total) return controller.close();
                state.pulls++;
                const line = `id: ${state.pulls}\ndata: ${'x'.repeat(size)}\n\n`;
                controller.enqueue(encoder.encode(line));
              },
            },
            { highWaterMark: 0 },
          ),
          { headers: { 'content-type': contentType } },
        ),
      {
        store: createMemoryStore(),
        scope: () => ({ principal: 'p' }),
        onWarning: () => {},
        ...(maxOutcomeBytes ? { maxOutcomeBytes } : {}),
        liveStreams: { channel: createMemoryLiveStreams() },
      },
    );
    return { handle, state };
  }
  const all = async (body: ReadableStream<Uint8Array>) => {
    const text = new TextDecoder();
    let out = '';
    const reader = body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return out;
      out += text.decode(value, { stream: true });
    }
  };

  it('a non-live stream keeps the first caller pace (backpressure)', async () => {
    const { handle, state } = pulled('text/plain', 1_000, 100);
    const response = await handle(post('plain-bp'));
    const reader = response.body!.getReader();
    await reader.read();
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Read ahead at most a few chunks, never the whole body.
    expect(state.pulls).toBeLessThan(10);
    await reader.cancel();
  });

  it('a live stream is read ahead; the first caller later gets the same bytes whole', async () => {
    const { handle, state } = pulled('text/event-stream', 200, 50);
    const response = await handle(post('live-ahead'));
    expect(response.status).toBe(200);
    const deadline = Date.now() + 10_000;
    while (state.pulls < 200 && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 20));
    expect(state.pulls).toBe(200);
    const text = await all(response.body!);
    const expected = Array.from(
      { length: 200 },
      (_, i) => `id: ${i + 1}\ndata: ${'x'.repeat(50)}\n\n`,
    ).join('');
    expect(text).toBe(expected);
    // And the replay is that body.
    const replay = await handle(post('live-ahead'));
    expect(await all(replay.body!)).toBe(expected);
  }, 30_000);

  it('past the outcome cap the read-ahead stops (memory bounded) and the first caller still gets everything', async () => {
    const { handle, state } = pulled('text/event-stream', 400, 1_000, 64 * 1024);
    const response = await handle(post('live-cap'));
    const reader = response.body!.getReader();
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    // About the cap's worth (65 chunks of ~1 KB), not the whole 400 KB body.
    expect(state.pulls).toBeGreaterThan(40);
    expect(state.pulls).toBeLessThan(90);
    let text = '';
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    expect(text.length).toBe(
      Array.from({ length: 400 }, (_, i) => `id: ${i + 1}\ndata: \n\n`.length + 1_000).reduce(
        (a, b) => a + b,
      ),
    );
    expect(text.endsWith(`id: 400\ndata: ${'x'.repeat(1_000)}\n\n`)).toBe(true);
  }, 30_000);
});
