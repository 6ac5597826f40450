import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
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
  server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

const request = (path: string, key: string, signal?: AbortSignal) =>
  fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'x-tenant': 'tenant-a' },
    ...(signal ? { signal } : {}),
  });

describe('@idem/express when the client leaves mid-stream', () => {
  it.each(Object.keys(writers))(
    '%s: records the whole body once; the retry replays it',
    async (name) => {
      const path = `/${slug(name)}`;
      const key = `gone-${slug(name)}`;
      const controller = new AbortController();
      const first = await request(path, key, controller.signal);
      const reader = first.body!.getReader();
      const { value } = await reader.read();
      expect(new TextDecoder().decode(value)).toBe(CHUNKS[0]);
      controller.abort();

      // Retry as a client would: while the first execution runs, 409; then the replay.
      let retry = await request(path, key);
      for (let i = 0; retry.status === 409 && i < 100; i++) {
        await retry.body?.cancel();
        await sleep(50);
        retry = await request(path, key);
      }
      expect(retry.status).toBe(200);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(await retry.text()).toBe(CHUNKS.join(''));
      expect(runs.get(name)).toBe(1);
    },
  );
});
