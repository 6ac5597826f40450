import type { AddressInfo } from 'node:net';
import { type ServerType, serve } from '@hono/node-server';
import { type Exchange, json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { type Context, Hono } from 'hono';
import { stream, streamSSE, streamText } from 'hono/streaming';
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

/** The ways a Hono route streams a body. */
const senders: Record<string, (c: Context) => Response | Promise<Response>> = {
  stream: (c) =>
    stream(c, async (out) => {
      for await (const chunk of produce()) await out.write(chunk);
    }),
  streamText: (c) =>
    streamText(c, async (out) => {
      for await (const chunk of produce()) await out.write(chunk);
    }),
  streamSSE: (c) =>
    streamSSE(c, async (out) => {
      // writeSSE frames each chunk: `data: chunk N\n\n` (the chunk's own newline ends the data).
      for await (const chunk of produce()) await out.write(chunk);
    }),
  'a ReadableStream body': (c) =>
    c.body(
      new ReadableStream<string>({
        async start(controller) {
          for await (const chunk of produce()) controller.enqueue(chunk);
          controller.close();
        },
      }).pipeThrough(new TextEncoderStream()),
      200,
      { 'content-type': 'text/plain' },
    ),
};

const runs = new Map<string, number>();
let server: ServerType;
let url = '';

beforeAll(async () => {
  const app = new Hono();
  app.use(
    idempotency({
      store: createMemoryStore(),
      scope: (c) => ({ principal: c.req.header('x-tenant') ?? 'tenant-a' }),
      onWarning: () => {},
    }),
  );
  for (const [name, send] of Object.entries(senders)) {
    app.post(`/${slug(name)}`, (c) => {
      runs.set(name, (runs.get(name) ?? 0) + 1);
      return send(c);
    });
  }
  app.post('/slow', async (c) => {
    runs.set('slow', (runs.get('slow') ?? 0) + 1);
    await sleep(150);
    return c.json({ late: true }, 201);
  });
  await new Promise<void>((resolve) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve());
  });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('@idem/hono when the client leaves mid-stream', () => {
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
});
