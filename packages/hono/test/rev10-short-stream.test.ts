import { connect } from 'node:net';
import { type ServerType, serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { streamSSE, streamText } from 'hono/streaming';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev10: a streamed response that ends within the recorder's read-ahead (one SSE event, a
// short streamText, an empty stream) is recorded whole and answered as bytes
// (`recordWhole` in @idem/http's record-response.ts). The handler's headers go with it,
// `Transfer-Encoding: chunked` included (Hono's stream helpers set it), and
// @hono/node-server adds a Content-Length for a bytes body: the first caller gets a head with
// both. RFC 9112 6.1: a sender MUST NOT send Content-Length with Transfer-Encoding; undici
// (Node's fetch) refuses such a response, and an intermediary that frames by Content-Length
// reads the chunk framing as the start of the next response on a kept-alive connection.

const servers: ServerType[] = [];
afterAll(() =>
  Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve)))),
);

async function start(withIdem: boolean) {
  const app = new Hono();
  if (withIdem)
    app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/sse', (c) => streamSSE(c, async (stream) => stream.writeSSE({ data: 'Hel' })));
  app.post('/sse-empty', (c) => streamSSE(c, async () => {}));
  app.post('/text', (c) => streamText(c, async (stream) => void (await stream.write('Hel'))));
  app.post(
    '/raw',
    () =>
      new Response(
        new ReadableStream({
          start(controller) {
            controller.enqueue(new TextEncoder().encode('Hel'));
            controller.close();
          },
        }),
        { headers: { 'transfer-encoding': 'chunked', 'content-type': 'text/plain' } },
      ),
  );
  const port = await new Promise<number>((resolve) => {
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(info.port),
    );
    servers.push(server);
  });
  return port;
}

/** The response head of a raw POST, lowercased (the socket closed once it came); 5 s bound. */
function head(port: number, path: string, key: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const timer = setTimeout(() => socket.destroy(new Error('no head within 5 s')), 5_000);
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      data += chunk;
      const end = data.indexOf('\r\n\r\n');
      if (end === -1) return;
      clearTimeout(timer);
      // Hono's stream helpers answer `Connection: keep-alive` whatever the request said.
      socket.destroy();
      resolve(data.slice(0, end).toLowerCase());
    });
    socket.on('error', reject);
    socket.write(
      `POST ${path} HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
    );
  });
}

const both = (text: string) =>
  /\r\ntransfer-encoding:/.test(text) && /\r\ncontent-length:/.test(text);

describe('rev10 hono: a short streamed response, first execution', () => {
  it('setup: without the middleware, Hono sends these chunked, without Content-Length', async () => {
    const port = await start(false);
    for (const path of ['/sse', '/sse-empty', '/text', '/raw'])
      expect(both(await head(port, path, `plain${path}`)), path).toBe(false);
  });

  // FINDING (HIGH): a streamed response that ends within the read-ahead is answered as bytes with the handler's Transfer-Encoding: chunked kept, and @hono/node-server adds Content-Length: the first caller gets both headers (invalid HTTP/1.1, refused by undici, a desync risk behind a proxy); fix in recordWhole (record-response.ts): drop transfer-encoding from the answered headers
  it.fails('with the middleware, the first response never carries Transfer-Encoding and Content-Length together', async () => {
    const port = await start(true);
    // Observed: both present for each path.
    for (const path of ['/sse', '/sse-empty', '/text', '/raw'])
      expect(both(await head(port, path, `idem${path}`)), path).toBe(false);
  });

  // FINDING (HIGH): consequence: Node's own fetch fails the first request of a one-event SSE completion (HPE_UNEXPECTED_CONTENT_LENGTH) though the handler ran and its outcome was recorded
  it.fails('undici (fetch) reads the first response of a one-event streamSSE', async () => {
    const port = await start(true);
    const response = await fetch(`http://127.0.0.1:${port}/sse`, {
      method: 'POST',
      headers: { 'idempotency-key': 'fetch-sse' },
      signal: AbortSignal.timeout(5_000),
    });
    expect(await response.text()).toBe('data: Hel\n\n');
  });

  it('held: the replay of the same key is framed once (Content-Length only)', async () => {
    const port = await start(true);
    await head(port, '/sse', 'replay-sse');
    const replay = await head(port, '/sse', 'replay-sse');
    expect(replay).toContain('idempotent-replayed: true');
    expect(both(replay)).toBe(false);
  });
});
