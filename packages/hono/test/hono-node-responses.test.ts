import { type ServerType, serve } from '@hono/node-server';
import { GENERATION_HEADER } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
import { type Context, Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// On @hono/node-server a handler's `Response` made with a string or bytes stays lightweight
// (node-server writes its body without a Web stream). The middleware records it from that body
// and hands the same object back: what the client gets is what the app without the middleware
// sends, byte for byte and header for header, and a replay answers the same.

const routes: Record<string, (c: Context) => Response> = {
  '/json': (c) => c.json({ ok: true, text: 'é ✓' }, 201),
  // No init at all: node-server's default content type.
  '/bare': () => new Response('bare \ud800 lone surrogate'),
  '/bytes': (c) =>
    c.body(new Uint8Array([0, 255, 1, 128]), 200, { 'content-type': 'application/octet-stream' }),
  '/empty': (c) => c.text(''),
  '/declared-length': () =>
    new Response('sized', { headers: { 'content-type': 'text/plain', 'content-length': '5' } }),
};

function app(withIdempotency: boolean, seen?: { handed?: Response; sent?: Response }): Hono {
  const hono = new Hono();
  if (seen) {
    hono.use(async (c, next) => {
      await next();
      seen.sent = c.res;
    });
  }
  if (withIdempotency) {
    hono.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  }
  for (const [path, handler] of Object.entries(routes)) {
    hono.post(path, (c) => {
      const response = handler(c);
      if (seen) seen.handed = response;
      return response;
    });
  }
  hono.post('/sse-whole', (c) =>
    c.body('event: token\ndata: whole\n\n', 200, { 'content-type': 'text/event-stream' }),
  );
  return hono;
}

const servers: ServerType[] = [];
async function listen(hono: Hono): Promise<string> {
  return new Promise((resolve) => {
    const server = serve({ fetch: hono.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(`http://127.0.0.1:${info.port}`),
    );
    servers.push(server);
  });
}

let plain = '';
let guarded = '';
const seen: { handed?: Response; sent?: Response } = {};
let observed = '';
beforeAll(async () => {
  plain = await listen(app(false));
  guarded = await listen(app(true));
  observed = await listen(app(true, seen));
});
afterAll(() =>
  Promise.all(
    servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
  ),
);

async function post(base: string, path: string, key?: string) {
  const response = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: key ? { 'idempotency-key': key } : {},
  });
  return {
    status: response.status,
    type: response.headers.get('content-type'),
    length: response.headers.get('content-length'),
    replayed: response.headers.get('idempotent-replayed'),
    generation: response.headers.get(GENERATION_HEADER),
    bytes: [...new Uint8Array(await response.arrayBuffer())],
  };
}

describe('@idem/hono on @hono/node-server, whole response bodies', () => {
  it('answers a first execution as the app without the middleware does, and its replay the same', async () => {
    for (const path of Object.keys(routes)) {
      const key = `same-${path}`;
      const without = await post(plain, path);
      const first = await post(guarded, path, key);
      const replay = await post(guarded, path, key);
      expect(first, path).toEqual(without);
      expect(replay.replayed, path).toBe('true');
      // (A replay of an empty body goes out without Content-Length: not compared.)
      const { status, type, bytes } = first;
      expect({ status: replay.status, type: replay.type, bytes: replay.bytes }, path).toEqual({
        status,
        type,
        bytes,
      });
    }
  });

  it('sends the lone surrogate of a string body as the U+FFFD it records', async () => {
    const first = await post(guarded, '/bare', 'surrogate');
    expect(first.bytes.slice(-18, -15)).toEqual([0xef, 0xbf, 0xbd]);
  });

  it("hands the handler's own Response to the server when its body is a string, a copy of bytes otherwise", async () => {
    for (const path of Object.keys(routes)) {
      seen.handed = undefined;
      seen.sent = undefined;
      await post(observed, path, `own-${path}`);
      expect(seen.handed, path).toBeDefined();
      // Bytes are the handler's to reuse once it returned: what goes out is a copy taken then.
      if (path === '/bytes') {
        expect(seen.sent, path).not.toBe(seen.handed);
        expect(await (seen.sent as unknown as Response).arrayBuffer()).toEqual(
          await (seen.handed as unknown as Response).arrayBuffer(),
        );
      } else expect(seen.sent, path).toBe(seen.handed);
    }
  });

  it('names the generation of a whole body of a published media type, and replays it', async () => {
    const first = await post(guarded, '/sse-whole', 'sse-whole');
    expect(first.status).toBe(200);
    expect(first.type).toBe('text/event-stream');
    expect(Number(first.generation)).toBeGreaterThan(0);
    expect(new TextDecoder().decode(new Uint8Array(first.bytes))).toBe(
      'event: token\ndata: whole\n\n',
    );
    const replay = await post(guarded, '/sse-whole', 'sse-whole');
    expect(replay.replayed).toBe('true');
    expect(replay.bytes).toEqual(first.bytes);
  });
});
