// @idem/hono on @hono/node-server: a handler's response the server then fails to send (Hono's
// HEAD answer throws for a bare `c.text(text)` on node-server 1.19.19 / hono 4.13.19; Node's
// `writeHead` refuses a header value with a control character that `Headers` takes): the
// first client gets node-server's 500, but the operation ran. What it produced is recorded and
// every retry gets it: a failed delivery is what retries are for, and releasing the key there
// would run the operation again (framrev3 released it; framrev4 found that an outer middleware
// can also repair such a response, so the release ran operations twice that were sent fine).
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import { listening, rawExchange, rawIsReplay, rawResponse } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { etag } from 'hono/etag';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { idempotency } from '../src/index.js';

describe('@hono/node-server: a response the server fails to send still ran once', () => {
  let url: string;
  let close: () => unknown;
  const runs = new Map<string, number>();
  const ran = (path: string) => runs.set(path, (runs.get(path) ?? 0) + 1);

  beforeAll(async () => {
    // node-server logs the ERR_INVALID_CHAR of each refused head.
    vi.spyOn(console, 'error').mockImplementation(() => {});
    const app = new Hono();
    // Mounted before idem: repairs a bare body's HEAD answer (framrev4's false positive).
    app.use('/etag/*', etag());
    app.use(
      '*',
      idempotency({
        store: createMemoryStore(),
        onWarning: () => {},
        scope: 'global',
        methods: ['POST', 'HEAD'],
      }),
    );
    app.get('/doc', (c) => {
      ran('/doc');
      return c.text('document-body');
    });
    app.get('/etag/doc', (c) => {
      ran('/etag/doc');
      return c.text('document-body');
    });
    app.post('/whole', (c) => {
      ran('/whole');
      c.header('x-trace', 'a\u0001b');
      return c.text('whole-body', 201);
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
    ['HEAD', '/etag/doc'],
    ['POST', '/whole'],
  ])(
    '%s %s: the handler runs once, whatever the first client got, and retries replay',
    async (method, path) => {
      const key = `sendfail-${randomUUID()}`;
      const before = runs.get(path) ?? 0;
      const first = rawResponse(await request(method, path, key), method === 'HEAD');
      // The first answer is the server's (a 500 when node-server cannot send it), not idem's.
      expect(first.head).toMatch(/^http\/1\.1 (200|201|500) /);
      for (let i = 0; i < 2; i++) {
        const retry = await request(method, path, key);
        expect(rawResponse(retry, method === 'HEAD').head).toMatch(/^http\/1\.1 20[01] /);
        expect(rawIsReplay(retry)).toBe(true);
      }
      expect(runs.get(path)).toBe(before + 1);
    },
  );
});
