// @idem/hono on @hono/node-server: a handler's response that never reaches its client as it
// is (framrev3). Hono's HEAD answer (`new Response(null, response)`, made once the middleware
// returned) throws for the lightweight response of a bare `c.text(text)` (node-server 1.19.19,
// hono 4.13.19), and Node's `writeHead` refuses a header value with a control character that
// `Headers` takes: node-server answers 500 either way. The outcome was recorded before that,
// and a retry got a 200 replay (the whole body, for a POST) the first client never got: now
// nothing is recorded, the key is released, and the retry runs and fails alike.
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import { listening, rawExchange, rawIsReplay, rawResponse } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { idempotency, stream } from '../src/index.js';

describe('@hono/node-server: a response the server fails to send is not recorded', () => {
  let url: string;
  let close: () => unknown;
  let runs = 0;

  beforeAll(async () => {
    // node-server logs the ERR_INVALID_CHAR of each refused head.
    vi.spyOn(console, 'error').mockImplementation(() => {});
    const app = new Hono();
    app.use(
      idempotency({
        store: createMemoryStore(),
        onWarning: () => {},
        scope: 'global',
        methods: ['POST', 'HEAD'],
      }),
    );
    // A bare `c.text(text)`: Hono's HEAD answer throws for it on node-server.
    app.get('/doc', (c) => {
      runs++;
      return c.text('document-body');
    });
    // With a status: Hono's HEAD answer is made (a control case, replayed).
    app.get('/doc-status', (c) => {
      runs++;
      return c.text('document-body', 200);
    });
    app.post('/whole', (c) => {
      runs++;
      c.header('x-trace', 'a\u0001b');
      return c.text('whole-body');
    });
    app.post('/web', () => {
      runs++;
      return new Response('web-body', { headers: { 'x-trace': 'a\u007fb' } });
    });
    app.post('/stream', (c) => {
      runs++;
      c.header('x-trace', 'a\u0001b');
      return stream(c, async (s) => {
        await s.write('alpha-');
        await s.write('beta');
      });
    });
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server;
    ({ url, close } = await listening(server));
  });
  afterAll(() => {
    vi.restoreAllMocks();
    return close();
  });

  function request(method: string, path: string, key: string): Promise<Buffer> {
    const body = method === 'POST' ? '{}' : '';
    const framing = body ? 'Content-Type: application/json\r\nContent-Length: 2\r\n' : '';
    return rawExchange(
      url,
      `${method} ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nIdempotency-Key: ${key}\r\n${framing}\r\n${body}`,
    );
  }

  it.each([
    ['HEAD', '/doc'],
    ['POST', '/whole'],
    ['POST', '/web'],
    ['POST', '/stream'],
  ])(
    '%s %s: the first client gets a 500, and so does the retry (it runs again, no replay)',
    async (method, path) => {
      const key = `unsent-${randomUUID()}`;
      const before = runs;
      const first = await request(method, path, key);
      expect(rawResponse(first, method === 'HEAD').head).toMatch(/^http\/1\.1 500 /);
      const retry = await request(method, path, key);
      expect(rawResponse(retry, method === 'HEAD').head).toMatch(/^http\/1\.1 500 /);
      expect(rawIsReplay(retry)).toBe(false);
      expect(runs).toBe(before + 2);
    },
  );

  it('HEAD of a response Hono answers: 200, then replayed (unchanged)', async () => {
    const key = `unsent-${randomUUID()}`;
    const before = runs;
    const first = rawResponse(await request('HEAD', '/doc-status', key), true);
    expect(first.head).toMatch(/^http\/1\.1 200 /);
    const retry = await request('HEAD', '/doc-status', key);
    expect(rawResponse(retry, true).head).toMatch(/^http\/1\.1 200 /);
    expect(rawIsReplay(retry)).toBe(true);
    expect(runs).toBe(before + 1);
  });
});
