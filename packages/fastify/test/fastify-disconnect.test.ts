import { Readable } from 'node:stream';
import { type Exchange, json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyReply } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// A client that leaves after the first chunk: the route's body is still read to its end and
// recorded once, and the retry replays it whole instead of running the route again.

const CHUNKS = ['chunk 0\n', 'chunk 1\n', 'chunk 2\n', 'chunk 3\n', 'chunk 4\n'];
const slug = (name: string) => name.replace(/[^a-z]+/gi, '-');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function* produce(): AsyncGenerator<string> {
  for (const [i, chunk] of CHUNKS.entries()) {
    if (i > 0) await sleep(40);
    yield chunk;
  }
}

/** Two chunks, then the source breaks: not a success, whoever reads it. */
async function* breakAfterTwo(): AsyncGenerator<string> {
  yield* CHUNKS.slice(0, 2);
  await sleep(80);
  throw new Error('upstream broke');
}

/** The ways a Fastify route streams a body. */
const senders: Record<string, (reply: FastifyReply) => unknown> = {
  'a Node stream': (reply) => reply.type('text/plain').send(Readable.from(produce())),
  'a Web ReadableStream': (reply) =>
    reply.type('text/plain').send(Readable.toWeb(Readable.from(produce()))),
  'a Response': () =>
    new Response(Readable.toWeb(Readable.from(produce())) as ReadableStream, {
      headers: { 'content-type': 'text/plain' },
    }),
  'raw writes of a hijacked reply': async (reply) => {
    reply.hijack();
    reply.raw.writeHead(200, { 'content-type': 'text/plain' });
    for await (const chunk of produce()) reply.raw.write(chunk);
    reply.raw.end();
  },
};

const runs = new Map<string, number>();
// Closing waits for the keep-alive sockets of the aborted exchanges otherwise.
const app = Fastify({ forceCloseConnections: true });
let url = '';

beforeAll(async () => {
  await app.register(idempotency, {
    store: createMemoryStore(),
    scope: (request) => ({ principal: request.headers['x-tenant'] ?? 'tenant-a' }),
    onWarning: () => {},
  });
  for (const [name, send] of Object.entries(senders)) {
    app.post(`/${slug(name)}`, async (_request, reply) => {
      runs.set(name, (runs.get(name) ?? 0) + 1);
      return send(reply);
    });
  }
  app.post('/breaks', async (_request, reply) => {
    runs.set('breaks', (runs.get('breaks') ?? 0) + 1);
    return reply.type('text/plain').send(Readable.from(breakAfterTwo()));
  });
  app.post('/slow', async (_request, reply) => {
    runs.set('slow', (runs.get('slow') ?? 0) + 1);
    await sleep(150);
    return reply.code(201).send({ late: true });
  });
  url = await app.listen({ port: 0, host: '127.0.0.1' });
});
afterAll(() => app.close());

describe('@idem/fastify when the client leaves mid-stream', () => {
  /** Retries as a client would: while the first execution runs, 409; then the replay. */
  async function retry(path: string, key: string): Promise<Exchange> {
    let exchange = await send(url, path, { key });
    for (let i = 0; exchange.status === 409 && i < 100; i++) {
      await sleep(50);
      exchange = await send(url, path, { key });
    }
    return exchange;
  }

  it.each(Object.keys(senders))(
    '%s: records the whole body once; the retry replays it',
    async (name) => {
      const path = `/${slug(name)}`;
      const left = await send(url, path, { key: `gone-${slug(name)}`, leaveAfterBytes: 1 });
      expect(left.complete).toBe(false);
      expect(left.body.toString()).toBe(CHUNKS[0]);

      const again = await retry(path, `gone-${slug(name)}`);
      expect(again.status).toBe(200);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(again.body.toString()).toBe(CHUNKS.join(''));
      expect(runs.get(name)).toBe(1);
    },
  );

  it('records a response the route sends after the client left', async () => {
    await expect(send(url, '/slow', { key: 'gone-early', timeoutMs: 50 })).rejects.toThrow(
      /timed out/,
    );
    const again = await retry('/slow', 'gone-early');
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(json(again)).toEqual({ late: true });
    expect(runs.get('slow')).toBe(1);
  });

  it('releases a body that breaks after the client left: the retry runs again', async () => {
    await send(url, '/breaks', { key: 'gone-broken', leaveAfterBytes: 1 });
    const again = await retry('/breaks', 'gone-broken');
    expect(again.status).toBe(200);
    expect(again.headers['idempotent-replayed']).toBeUndefined();
    expect(runs.get('breaks')).toBe(2);
  });
});
