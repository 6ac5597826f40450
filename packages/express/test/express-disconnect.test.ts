import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type Exchange, json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
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

type Write = (res: express.Response) => Promise<void>;

/** The ways an Express route streams a body. */
const writers: Record<string, Write> = {
  'res.write loop': async (res) => {
    for await (const chunk of produce()) res.write(chunk);
    res.end();
  },
  'res.write loop that waits for drain': async (res) => {
    for await (const chunk of produce()) {
      if (!res.write(chunk)) await once(res, 'drain');
    }
    res.end();
  },
  'stream.pipeline': async (res) => {
    await pipeline(Readable.from(produce()), res).catch(() => {});
  },
  'readable.pipe': async (res) => {
    const source = Readable.from(produce());
    source.pipe(res);
    await once(source, 'close');
  },
};

const runs = new Map<string, number>();
const failingWritten: number[] = [];
let server: Server;
let url = '';

beforeAll(async () => {
  const app = express();
  app.use(
    idempotency({
      store: createMemoryStore(),
      scope: (req) => ({ principal: req.get('x-tenant') ?? 'tenant-a' }),
      onWarning: () => {},
    }),
  );
  for (const [name, write] of Object.entries(writers)) {
    app.post(`/${slug(name)}`, async (_req, res) => {
      runs.set(name, (runs.get(name) ?? 0) + 1);
      res.status(200).type('text/plain');
      await write(res);
    });
  }
  app.post('/breaks', async (_req, res) => {
    runs.set('breaks', (runs.get('breaks') ?? 0) + 1);
    res.status(200).type('text/plain');
    await pipeline(Readable.from(breakAfterTwo()), res).catch(() => {});
  });
  // A response that will not be recorded (a 500): nothing to drain, the route may stop.
  app.post('/failing', async (_req, res) => {
    let closed = false;
    res.on('close', () => {
      closed = true;
    });
    res.status(500).type('text/plain');
    let written = 0;
    for await (const chunk of produce()) {
      if (closed) break;
      res.write(chunk);
      written++;
    }
    failingWritten.push(written);
    res.end();
  });
  app.post('/slow', async (_req, res) => {
    runs.set('slow', (runs.get('slow') ?? 0) + 1);
    await sleep(150);
    res.status(201).json({ late: true });
  });
  server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('@idem/express when the client leaves mid-stream', () => {
  /** Retries as a client would: while the first execution runs, 409; then the replay. */
  async function retry(path: string, key: string): Promise<Exchange> {
    let exchange = await send(url, path, { key });
    for (let i = 0; exchange.status === 409 && i < 100; i++) {
      await sleep(50);
      exchange = await send(url, path, { key });
    }
    return exchange;
  }

  it.each(Object.keys(writers))(
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

  it('tells the route at once when its response would not be recorded anyway', async () => {
    await send(url, '/failing', { key: 'gone-failing', leaveAfterBytes: 1 });
    for (let i = 0; failingWritten.length === 0 && i < 100; i++) await sleep(20);
    expect(failingWritten[0]).toBeLessThan(CHUNKS.length);
  });
});
