import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerType } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { stream as honoStream, streamSSE as honoStreamSSE } from 'hono/streaming';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency, stream, streamSSE, streamText } from '../src/index.js';
import { CLIENTS, type Client, closeAll, type Got, keyOf } from './rev33d-support.js';

// rev33d (a): a streamed answer (streamSSE, stream(), streamText of @idem/hono, Hono's own
// stream() and streamSSE, a ReadableStream body), NO timeout, whose client leaves after the first
// chunk, over HTTP/1.1 keep-alive and HTTP/2: the body is still read to its end and recorded
// (README), so a retry gets the whole stream replayed byte for byte, the route run once.

const servers: ServerType[] = [];
const clients: Client[] = [];
afterAll(async () => {
  for (const client of clients.splice(0)) client.close();
  await closeAll(servers);
});

const PARTS = 6;
const PAD = 'z'.repeat(200);

function build(runs: Map<string, number>): Hono {
  const app = new Hono();
  const count = (name: string) => runs.set(name, (runs.get(name) ?? 0) + 1);
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/sse', (c) => {
    count('sse');
    return streamSSE(c, async (s) => {
      for (let i = 1; i <= PARTS; i += 1) {
        await s.writeSSE({ id: String(i), event: 'part', data: `sse ${i} ${PAD}` });
        await sleep(15);
      }
    });
  });
  app.post('/stream', (c) => {
    count('stream');
    c.header('content-type', 'text/plain');
    return stream(c, async (s) => {
      for (let i = 1; i <= PARTS; i += 1) {
        await s.write(`stream ${i} ${PAD}\n`);
        await sleep(15);
      }
    });
  });
  app.post('/stream-text', (c) => {
    count('stream-text');
    return streamText(c, async (s) => {
      for (let i = 1; i <= PARTS; i += 1) {
        await s.writeln(`text ${i} ${PAD}`);
        await sleep(15);
      }
    });
  });
  app.post('/hono-stream', (c) => {
    count('hono-stream');
    c.header('content-type', 'text/plain');
    return honoStream(c, async (s) => {
      for (let i = 1; i <= PARTS; i += 1) {
        await s.write(`hono ${i} ${PAD}\n`);
        await sleep(15);
      }
    });
  });
  app.post('/hono-sse', (c) => {
    count('hono-sse');
    return honoStreamSSE(c, async (s) => {
      for (let i = 1; i <= PARTS; i += 1) {
        await s.writeSSE({ data: `hono-sse ${i} ${PAD}` });
        await sleep(15);
      }
    });
  });
  app.post('/readable', (c) => {
    count('readable');
    let i = 0;
    return c.body(
      new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (i > 0) await sleep(15);
          i += 1;
          if (i > PARTS) controller.close();
          else controller.enqueue(new TextEncoder().encode(`readable ${i} ${PAD}\n`));
        },
      }),
      201,
      { 'content-type': 'application/x-ndjson' },
    );
  });
  return app;
}

async function settled(client: Client, path: string, key: string): Promise<Got> {
  let last = await client.send(path, { key, body: '{}' });
  for (let i = 0; i < 200 && last.status === 409; i += 1) {
    await sleep(20);
    last = await client.send(path, { key, body: '{}' });
  }
  return last;
}

const CHUNKED_HELPERS = new Set(['/sse', '/stream-text', '/hono-sse']);
const PATHS = ['/sse', '/stream', '/stream-text', '/hono-stream', '/hono-sse', '/readable'];

describe('rev33d hono (a): a client leaves mid-stream, no timeout', () => {
  for (const make of CLIENTS) {
    for (const path of PATHS) {
      // Hono's streamSSE and streamText set `Transfer-Encoding: chunked`, which node:http2 refuses
      // (ERR_HTTP2_INVALID_CONNECTION_HEADERS; without idem the process crashes on it): they
      // do not work over HTTP/2 on @hono/node-server 1.19.19 at all, idem or not.
      if (make === CLIENTS[1] && CHUNKED_HELPERS.has(path)) continue;
      it(`${make.name} ${path}: recorded whole, replayed byte for byte, one run`, async () => {
        const runs = new Map<string, number>();
        const client = await make(build(runs), servers);
        clients.push(client);
        const whole = await client.send(path, { key: keyOf('whole'), body: '{}' });
        expect(whole.status).toBeGreaterThanOrEqual(200);
        expect(whole.status).toBeLessThan(300);
        const key = keyOf('left');
        const cut = await client.send(path, { key, body: '{}', leaveAfter: 1 });
        expect(cut.body.length).toBeLessThan(whole.body.length);
        const again = await settled(client, path, key);
        expect(again.status).toBe(whole.status);
        expect(again.headers['idempotent-replayed']).toBe('true');
        expect(again.body.toString()).toBe(whole.body.toString());
        const third = await client.send(path, { key, body: '{}' });
        expect(third.body.equals(again.body)).toBe(true);
        expect(runs.get(path.slice(1))).toBe(2);
      });
    }
  }
});
