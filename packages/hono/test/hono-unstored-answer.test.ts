import { createServer as createH2Server, connect as http2Connect } from 'node:http2';
import { type ServerType, serve } from '@hono/node-server';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { flakyStore, post, type Seen } from './unstored-support.js';

// A first execution that fails before anything of its response went out (its outcome could not
// be stored, or its body broke on the first read) must reach its client as no response at all
// (the connection dropped), as on the Node adapters: never a 2xx head, and never, as
// @hono/node-server does with a body failing on its first read, an empty complete 2xx.

const runs: Record<string, number> = {};
const count = (name: string) => {
  runs[name] = (runs[name] ?? 0) + 1;
};
const { store, down } = flakyStore();
const guard = idempotency({
  store,
  scope: 'global',
  completionWaitMs: 300,
  onWarning: () => {},
});
const app = new Hono();
/** The status upstream middleware (a logger) saw, by path. */
const upstreamSaw: Record<string, number> = {};
app.use(async (c, next) => {
  await next();
  upstreamSaw[c.req.path] = c.res.status;
});
// Upstream middleware that replaces the response whatever it is (without node-server's mark).
app.use('/rewrap/*', async (c, next) => {
  await next();
  c.res = new Response(`replaced ${c.res.status}`, { status: c.res.status });
});
app.use(guard);
app.post('/json', (c) => {
  count('json');
  return c.json({ ok: true }, 201);
});
app.post('/rewrap/json', (c) => {
  count('rewrap');
  return c.json({ ok: true }, 201);
});
app.post('/text-stream', () => {
  count('text-stream');
  // A Web stream that is whole at once: read ahead, recorded as a whole body.
  return new Response(
    new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('whole'));
        controller.close();
      },
    }),
    { status: 201, headers: { 'content-type': 'text/plain' } },
  );
});
app.post('/breaks-at-once', () => {
  count('breaks-at-once');
  return new Response(
    new ReadableStream({
      start(controller) {
        controller.error(new Error('broken at once'));
      },
    }),
    { status: 201, headers: { 'content-type': 'text/plain' } },
  );
});
app.post('/slow-stream', () => {
  count('slow-stream');
  const encoder = new TextEncoder();
  let sent = 0;
  return new Response(
    new ReadableStream({
      async pull(controller) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        if (sent++ < 3) controller.enqueue(encoder.encode(`part ${sent}\n`));
        else controller.close();
      },
    }),
    { status: 201, headers: { 'content-type': 'text/plain' } },
  );
});

let server: ServerType;
let base = '';
beforeAll(async () => {
  base = await new Promise<string>((resolve) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(`http://127.0.0.1:${info.port}`),
    );
  });
});
afterAll(async () => {
  down.complete = false;
  await guard.drain(5_000);
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe('@idem/hono on @hono/node-server: a first execution that failed before its head', () => {
  for (const path of ['/json', '/text-stream']) {
    it(`${path}: outcome not stored (the store refuses the final write) -> no status, the connection dropped; once stored, the replay`, async () => {
      const key = `unstored-${path}`;
      down.complete = true;
      const first = await post(base, path, key);
      expect(first.status).toBeUndefined();
      expect(first.error).toBe('socket hang up');
      // Upstream middleware (a logger) sees a failure, not the handler's 2xx.
      expect(upstreamSaw[path]).toBe(500);
      // The completion goes on in the background: once the store takes it, the retry replays.
      down.complete = false;
      let retry: Seen | undefined;
      for (let i = 0; i < 40; i++) {
        retry = await post(base, path, key);
        if (retry.status !== 409) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(retry?.status).toBe(201);
      expect(retry?.replayed).toBe('true');
      expect(runs[path.slice(1)]).toBe(1);
    });
  }

  it('upstream middleware that replaces the dropped answer sends nothing either; the server goes on serving', async () => {
    down.complete = true;
    try {
      const first = await post(base, '/rewrap/json', 'rewrap');
      expect(first.status).toBeUndefined();
      expect(first.error).toBe('socket hang up');
      expect(upstreamSaw['/rewrap/json']).toBe(500);
    } finally {
      down.complete = false;
    }
    const other = await post(base, '/json', 'after-rewrap');
    expect([other.status, other.complete]).toEqual([201, true]);
  });

  it('a body that breaks on its first read -> no status (never an empty complete 201); the retry runs again', async () => {
    const first = await post(base, '/breaks-at-once', 'breaks-at-once');
    expect(first.status).toBeUndefined();
    expect(first.error).toBe('socket hang up');
    const retry = await post(base, '/breaks-at-once', 'breaks-at-once');
    expect(retry.status).toBeUndefined();
    expect(runs['breaks-at-once']).toBe(2);
  });

  it('a streamed body whose outcome is not stored: the head went out, the body never completes', async () => {
    down.complete = true;
    try {
      const first = await post(base, '/slow-stream', 'slow-stream');
      expect(first.status).toBe(201);
      // Every chunk may have gone out; the end of the body never does.
      expect(first.complete).toBe(false);
      expect(first.error).toBe('aborted');
    } finally {
      down.complete = false;
    }
  });

  it('the same routes with a store that works: the status and body as the handler made them', async () => {
    const json = await post(base, '/json', 'works-json');
    expect([json.status, json.complete, json.body]).toEqual([201, true, '{"ok":true}']);
    const text = await post(base, '/text-stream', 'works-text');
    expect([text.status, text.complete, text.body]).toEqual([201, true, 'whole']);
    const slow = await post(base, '/slow-stream', 'works-slow');
    expect([slow.status, slow.complete, slow.body]).toEqual([
      201,
      true,
      'part 1\npart 2\npart 3\n',
    ]);
  });

  it('over HTTP/2: the stream is reset with no head; the session serves the next stream', async () => {
    const h2 = await new Promise<{ server: ServerType; url: string }>((resolve) => {
      const server = serve(
        { fetch: app.fetch, port: 0, hostname: '127.0.0.1', createServer: createH2Server },
        (info) => resolve({ server, url: `http://127.0.0.1:${info.port}` }),
      );
    });
    const client = http2Connect(h2.url);
    client.on('error', () => {});
    const exchange = (key: string) =>
      new Promise<{ status?: number; rst?: number; body: string }>((resolve) => {
        const seen: { status?: number; rst?: number; body: string } = { body: '' };
        const stream = client.request({
          ':method': 'POST',
          ':path': '/json',
          'idempotency-key': key,
          'content-type': 'application/json',
        });
        stream.on('response', (headers) => {
          seen.status = Number(headers[':status']);
        });
        stream.setEncoding('utf8');
        stream.on('data', (chunk: string) => {
          seen.body += chunk;
        });
        stream.on('error', () => {});
        stream.on('close', () => {
          seen.rst = stream.rstCode;
          resolve(seen);
        });
        stream.end('{"a":1}');
      });
    try {
      down.complete = true;
      const first = await exchange('h2-unstored');
      down.complete = false;
      expect(first.status).toBeUndefined();
      expect(first.body).toBe('');
      // Reset as an error (INTERNAL_ERROR), not NO_ERROR.
      expect(first.rst).toBe(2);
      const next = await exchange('h2-next');
      expect([next.status, next.body]).toEqual([201, '{"ok":true}']);
    } finally {
      down.complete = false;
      client.destroy();
      await new Promise<void>((resolve) => h2.server.close(() => resolve()));
    }
  });
});
