/**
 * Edges of live streams on one process: a compressed stream attached byte-identically (and
 * never "resumed" inside its coding), the bound on attached readers, and the race of a
 * duplicate that arrives exactly as the first execution completes.
 */
import { gunzipSync, gzipSync } from 'node:zlib';
import { createMemoryLiveStreams, type IdempotencyStore, type LiveStreams } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisLiveStreams, createRedisStore } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { GENERATION_HEADER, REPLAYED_HEADER, withIdempotency } from '../src/index.js';
import { sseApp, sseEvent } from './live/sse-app.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const bytesOf = async (response: Response) => new Uint8Array(await response.arrayBuffer());
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

const post = (key: string, body: object, headers: Record<string, string> = {}) =>
  new Request('http://127.0.0.1/stream', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });

describe('live streams: a compressed (gzip) stream', () => {
  const events = Array.from({ length: 12 }, (_, i) => sseEvent(1, i + 1, 40)).join('');
  const gzipped = gzipSync(Buffer.from(events));
  // The compressed bytes in 6 pieces, one every 40 ms (a compression middleware's flushes).
  const pieces = Array.from({ length: 6 }, (_, i) =>
    gzipped.subarray(
      Math.floor((i * gzipped.length) / 6),
      Math.floor(((i + 1) * gzipped.length) / 6),
    ),
  );
  function gzipApp(channel: LiveStreams) {
    let runs = 0;
    const handle = withIdempotency(
      async () => {
        runs++;
        let n = 0;
        const body = new ReadableStream<Uint8Array>({
          async pull(controller) {
            if (n > 0) await sleep(40);
            controller.enqueue(new Uint8Array(pieces[n++] as Buffer));
            if (n === pieces.length) controller.close();
          },
        });
        return new Response(body, {
          headers: { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' },
        });
      },
      {
        store: createMemoryStore(),
        scope: () => ({ principal: 'p' }),
        onWarning: () => {},
        liveStreams: { channel },
      },
    );
    return { handle, runs: () => runs };
  }

  it('is attached whole and byte-identical (with its Content-Encoding), and a Last-Event-ID gets 412 at once, live and on replay', async () => {
    const channel = createMemoryLiveStreams();
    const app = gzipApp(channel);
    const first = await app.handle(post('g1', {}));
    const firstReader = first.body!.getReader();
    const firstParts: Uint8Array[] = [(await firstReader.read()).value as Uint8Array];
    const attached = await app.handle(post('g1', {}));
    expect(attached.status).toBe(200);
    expect(attached.headers.get('content-encoding')).toBe('gzip');
    expect(attached.headers.get(REPLAYED_HEADER)).toBe('true');
    const attachedBytes = bytesOf(attached);
    // Mid-stream: the ids are inside the compressed bytes, a resume cannot cut there.
    const started = performance.now();
    const resumed = await app.handle(post('g1', {}, { 'last-event-id': '3' }));
    const resumeMs = performance.now() - started;
    expect(resumed.status).toBe(412);
    expect(((await resumed.json()) as { title: string }).title).toBe(
      'Compressed stream cannot be resumed',
    );
    // Answered at once, not after waiting anchorWaitMs (2 s) for an id that can never appear.
    expect(resumeMs).toBeLessThan(1_000);
    for (let read = await firstReader.read(); !read.done; read = await firstReader.read())
      firstParts.push(read.value);
    const firstBytes = new Uint8Array(Buffer.concat(firstParts));
    expect(same(firstBytes, gzipped)).toBe(true);
    expect(same(await attachedBytes, gzipped)).toBe(true);
    expect(gunzipSync(await attachedBytes).toString()).toBe(events);
    const replay = await app.handle(post('g1', {}));
    expect(same(await bytesOf(replay), gzipped)).toBe(true);
    const replayResume = await app.handle(post('g1', {}, { 'last-event-id': '3' }));
    expect(replayResume.status).toBe(412);
    expect(((await replayResume.json()) as { title: string }).title).toBe(
      'Compressed stream cannot be resumed',
    );
    expect(app.runs()).toBe(1);
    expect(channel.stats()).toEqual({ generations: 0, readers: 0, bytes: 0 });
  });

  it('a duplicate that refuses the coding gets the 409, never gzip bytes; one that takes gzip attaches; once stored, the replay is decoded for it', async () => {
    const channel = createMemoryLiveStreams();
    const app = gzipApp(channel);
    const first = await app.handle(post('g2', {}));
    const firstBytes = bytesOf(first);
    for (const refusing of ['identity', '', 'gzip;q=0', 'br', '*;q=0']) {
      const joiner = await app.handle(post('g2', {}, { 'accept-encoding': refusing }));
      expect([refusing, joiner.status]).toEqual([refusing, 409]);
      expect(joiner.headers.get('content-encoding')).toBeNull();
      expect(((await joiner.json()) as { type: string }).type).toBe(
        'https://idem.dev/problems/in-progress',
      );
    }
    for (const taking of ['gzip', 'x-gzip, br', '*']) {
      const joiner = await app.handle(post('g2', {}, { 'accept-encoding': taking }));
      expect([taking, joiner.status, joiner.headers.get('content-encoding')]).toEqual([
        taking,
        200,
        'gzip',
      ]);
      expect(joiner.headers.get(REPLAYED_HEADER)).toBe('true');
      expect(gunzipSync(await bytesOf(joiner)).toString()).toBe(events);
    }
    expect(same(await firstBytes, gzipped)).toBe(true);
    const replay = await app.handle(post('g2', {}, { 'accept-encoding': 'identity' }));
    expect(replay.status).toBe(200);
    expect(replay.headers.get('content-encoding')).toBeNull();
    expect(await replay.text()).toBe(events);
    expect(app.runs()).toBe(1);
    expect(channel.stats()).toEqual({ generations: 0, readers: 0, bytes: 0 });
  });
});

describe('live streams: maxReaders', () => {
  it('the reader past maxReaders gets the 409 problem; a reader that leaves frees its place', async () => {
    const channel = createMemoryLiveStreams();
    const app = sseApp(createMemoryStore(), { liveStreams: { channel, maxReaders: 2 } });
    const plan = { events: 20, intervalMs: 30 };
    const first = await app.handle(post('m1', plan));
    const firstBody = bytesOf(first);
    const one = await app.handle(post('m1', plan));
    const two = await app.handle(post('m1', plan));
    expect([one.status, two.status]).toEqual([200, 200]);
    expect(channel.stats().readers).toBe(2);
    const third = await app.handle(post('m1', plan));
    expect(third.status).toBe(409);
    expect(third.headers.get('content-type')).toContain('application/problem+json');
    expect(((await third.json()) as { type: string }).type).toBe(
      'https://idem.dev/problems/in-progress',
    );
    expect(channel.stats().readers).toBe(2);
    // One leaves: its place is free at once.
    await one.body!.cancel();
    expect(channel.stats().readers).toBe(1);
    const fourth = await app.handle(post('m1', plan));
    expect(fourth.status).toBe(200);
    expect(fourth.headers.get(GENERATION_HEADER)).toBe('1');
    const [whole, twoBytes, fourthBytes] = await Promise.all([
      firstBody,
      bytesOf(two),
      bytesOf(fourth),
    ]);
    expect(same(twoBytes, whole)).toBe(true);
    expect(same(fourthBytes, whole)).toBe(true);
    expect(channel.stats()).toEqual({ generations: 0, readers: 0, bytes: 0 });
    expect(app.runs()).toBe(1);
  });
});

/** `store` whose `acquire` answers only once `hold()`'s promise settles (while one is set). */
function gated(store: IdempotencyStore) {
  let gate: Promise<unknown> | undefined;
  const proxy = new Proxy(store, {
    get(target, name) {
      const value = Reflect.get(target, name, target) as unknown;
      if (name === 'acquire')
        return async (input: Parameters<IdempotencyStore['acquire']>[0]) => {
          const result = await target.acquire(input);
          if (gate) await gate;
          return result;
        };
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return {
    store: proxy,
    hold(until: Promise<unknown> | undefined) {
      gate = until;
    },
  };
}

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const connections: Redis[] = [];
afterAll(() => {
  for (const connection of connections) connection.disconnect();
});

const backends: {
  name: string;
  make(): { store: IdempotencyStore; channel: LiveStreams | undefined; after: number };
}[] = [
  {
    name: 'memory',
    make: () => ({ store: createMemoryStore(), channel: undefined, after: 0 }),
  },
  {
    name: 'Redis (the stream deleted after its end grace)',
    make() {
      const client = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
      const blockingClient = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
      connections.push(client, blockingClient);
      const store = createRedisStore({
        client,
        keyPrefix: `idem-live-edges:${process.pid}:${Date.now()}:`,
      });
      const channel = createRedisLiveStreams({
        client,
        blockingClient,
        store,
        endGraceMs: 100,
        blockMs: 300,
      });
      // Past the grace: the stream key is deleted when the duplicate attaches.
      return { store, channel, after: 400 };
    },
  },
];

describe.each(backends)('live streams: a duplicate as the first completes ($name)', (backend) => {
  it('gets the stored replay, byte-identical, never a 409 for a stored outcome', async () => {
    const { store, channel, after } = backend.make();
    const gate = gated(store);
    const app = sseApp(gate.store, { liveStreams: channel ? { channel } : {} });
    const plan = { events: 5, intervalMs: 20 };
    const first = await app.handle(post('r1', plan));
    let firstDone = () => {};
    const completed = new Promise<void>((resolve) => {
      firstDone = resolve;
    });
    // The duplicate reads the key in progress, then waits there until the first completed.
    gate.hold(completed);
    const duplicate = app.handle(post('r1', plan));
    await sleep(30);
    gate.hold(undefined);
    const whole = await bytesOf(first);
    // The end of the first body is held until the outcome is stored.
    await sleep(after);
    firstDone();
    const answer = await duplicate;
    expect(answer.status).toBe(200);
    expect(answer.headers.get(REPLAYED_HEADER)).toBe('true');
    expect(same(await bytesOf(answer), whole)).toBe(true);
    expect(new TextDecoder().decode(whole)).toBe(
      Array.from({ length: 5 }, (_, i) => sseEvent(1, i + 1)).join(''),
    );
    expect(app.runs()).toBe(1);
  });

  it('attached within the race, live or from the replay: always the whole body (40 tries)', async () => {
    const { store, channel } = backend.make();
    const app = sseApp(store, { liveStreams: channel ? { channel } : {} });
    const plan = { events: 3, intervalMs: 5 };
    const expected = Array.from({ length: 3 }, (_, i) => sseEvent(1, i + 1)).join('');
    const statuses = new Map<number, number>();
    const deadline = performance.now() + 15_000;
    for (let i = 0; i < 40 && performance.now() < deadline; i++) {
      const first = await app.handle(post(`rr${i}`, plan));
      const whole = bytesOf(first);
      // Duplicates spread over the first's last event and its completion.
      await sleep(8 + (i % 5) * 2);
      const answers = await Promise.all(
        [0, 1, 2].map(async (delay) => {
          await sleep(delay * 3);
          const response = await app.handle(post(`rr${i}`, plan));
          return { status: response.status, bytes: await bytesOf(response) };
        }),
      );
      const body = new TextDecoder().decode(await whole);
      expect(body).toBe(expected);
      for (const { status, bytes } of answers) {
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        // 409 only while no byte of the response exists yet is impossible here (the first
        // has answered): every duplicate gets the stream or the replay, whole.
        expect(status).toBe(200);
        expect(new TextDecoder().decode(bytes)).toBe(expected);
      }
    }
    expect(statuses.get(200)).toBeGreaterThan(0);
  }, 30_000);
});
