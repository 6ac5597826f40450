import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerType } from '@hono/node-server';
import { RECORDED_HEADERS } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Hono, type MiddlewareHandler } from 'hono';
import { basicAuth } from 'hono/basic-auth';
import { bearerAuth } from 'hono/bearer-auth';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import { jsx } from 'hono/jsx';
import { jsxRenderer } from 'hono/jsx-renderer';
import { afterAll, describe, expect, it } from 'vitest';
import { type IdempotencyVariables, idempotency } from '../src/index.js';
import { CLIENTS, type Client, closeAll, type Got, keyOf } from './rev33d-support.js';

// rev33d (a): everyday paths, NO timeout, @hono/node-server over a real HTTP/1.1 keep-alive
// connection and over HTTP/2. Every 2xx is recorded once and replayed byte for byte (status,
// recorded headers, body), the route run once; a non-2xx (404, 3xx, onError's 500, an
// HTTPException, a 401 or 413 answered by a middleware after idem) is released and answered
// alike again; the handler behind a 401/413 never runs.

const servers: ServerType[] = [];
const clients: Client[] = [];
afterAll(async () => {
  for (const client of clients.splice(0)) client.close();
  await closeAll(servers);
});

const BIG = 'y'.repeat(3000);

type Env = { Variables: IdempotencyVariables & { user: string } };

function build(runs: Map<string, number>): Hono<Env> {
  const app = new Hono<Env>();
  const count = (name: string) => {
    const n = (runs.get(name) ?? 0) + 1;
    runs.set(name, n);
    return n;
  };
  app.onError((error, c) => {
    if (error instanceof HTTPException) return error.getResponse();
    return c.json({ error: error.message }, 500);
  });
  app.use(async (c, next) => {
    c.header('x-upstream', 'u');
    await next();
  });
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  // After idem: a middleware reading c.res before next(), one setting c.var.
  const readBefore: MiddlewareHandler<Env> = async (c, next) => {
    c.header('x-pre-status', String(c.res.status));
    await next();
    c.header('x-post-type', c.res.headers.get('content-type') ?? 'none');
  };
  app.use('/read-before', readBefore);
  app.use('/var', async (c, next) => {
    c.set('user', 'u-1');
    await next();
  });
  app.use('/basic', basicAuth({ username: 'a', password: 'b' }));
  app.use('/bearer', bearerAuth({ token: 'secret-token' }));
  app.use('/limited', bodyLimit({ maxSize: 16 }));
  app.use(
    '/jsx',
    jsxRenderer(({ children }) => jsx('html', {}, jsx('body', {}, children))),
  );
  app.use(
    '/jsx-stream',
    jsxRenderer(({ children }) => jsx('html', {}, jsx('body', {}, children)), { stream: true }),
  );

  app.post('/body', async (c) => {
    const n = count('body');
    await sleep(5);
    return c.body(new TextEncoder().encode(`bytes ${n} ${BIG}`), 201, {
      'content-type': 'application/octet-stream',
      'cache-control': 'no-store',
    });
  });
  app.post('/text', (c) => c.text(`text ${count('text')} é ${BIG}`, 201));
  app.post('/json', async (c) => c.json({ n: count('json'), got: await c.req.json() }, 200));
  app.post('/html', (c) => c.html(`<p>html ${count('html')}</p>`, 201));
  app.post('/redirect', (c) => {
    count('redirect');
    return c.redirect('/elsewhere', 303);
  });
  app.post('/not-found', (c) => {
    count('not-found');
    return c.notFound();
  });
  app.post('/throws', () => {
    count('throws');
    throw new Error('boom');
  });
  app.post('/http-exception', () => {
    count('http-exception');
    throw new HTTPException(418, { message: 'teapot' });
  });
  app.post('/twice', (c) => {
    const n = count('twice');
    c.res = new Response(`first ${n}`, { status: 202, headers: { 'x-first': '1' } });
    c.res = new Response(`second ${n}`, {
      status: 201,
      headers: { 'content-type': 'text/x-second', location: `/twice/${n}` },
    });
    return c.res;
  });
  app.post('/read-before', (c) => c.json({ n: count('read-before') }, 201));
  app.post('/var', (c) =>
    c.json({ n: count('var'), user: c.get('user'), key: c.get('idempotency')?.key }, 201),
  );
  app.post('/basic', (c) => c.text(`basic ${count('basic')}`, 201));
  app.post('/bearer', (c) => c.text(`bearer ${count('bearer')}`, 201));
  app.post('/limited', async (c) =>
    c.text(`limited ${count('limited')} ${await c.req.text()}`, 201),
  );
  app.post('/jsx', (c) => c.render(jsx('p', {}, `jsx ${count('jsx')}`) as unknown as string));
  app.post('/jsx-stream', (c) =>
    c.render(jsx('p', {}, `jsx-stream ${count('jsx-stream')}`) as unknown as string),
  );
  app.post('/stream', (c) => {
    const n = count('stream');
    let part = 0;
    return c.body(
      new ReadableStream<Uint8Array>({
        async pull(controller) {
          await sleep(2);
          part += 1;
          if (part > 4) controller.close();
          else controller.enqueue(new TextEncoder().encode(`stream ${n} part ${part} ${BIG}\n`));
        },
      }),
      201,
      { 'content-type': 'text/plain; charset=utf-8' },
    );
  });
  return app;
}

/** Routes whose answer Hono makes apart from the context (`HTTPException`'s own `Response`, basicAuth's, bearerAuth's, bodyLimit's too). */
const HONO_DROPS_UPSTREAM = new Set(['/twice', '/http-exception', '/basic', '/bearer', '/limited']);

function recorded(got: Got): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const name of RECORDED_HEADERS) out[name] = got.headers[name];
  return out;
}

interface Case {
  path: string;
  /** Recorded and replayed (2xx), or released and answered again. */
  replayed: boolean;
  status: number;
  body?: string;
  headers?: Record<string, string>;
  /** Runs of the route after first request and retry. */
  runs: number;
}

const cases: Case[] = [
  { path: '/body', replayed: true, status: 201, runs: 1 },
  { path: '/text', replayed: true, status: 201, runs: 1 },
  { path: '/json', replayed: true, status: 200, runs: 1 },
  { path: '/html', replayed: true, status: 201, runs: 1 },
  { path: '/twice', replayed: true, status: 201, runs: 1 },
  { path: '/read-before', replayed: true, status: 201, runs: 1 },
  { path: '/var', replayed: true, status: 201, runs: 1 },
  { path: '/jsx', replayed: true, status: 200, runs: 1 },
  { path: '/jsx-stream', replayed: true, status: 200, runs: 1 },
  { path: '/stream', replayed: true, status: 201, runs: 1 },
  { path: '/redirect', replayed: false, status: 303, runs: 2 },
  { path: '/not-found', replayed: false, status: 404, runs: 2 },
  { path: '/throws', replayed: false, status: 500, runs: 2 },
  { path: '/http-exception', replayed: false, status: 418, runs: 2 },
  { path: '/basic', replayed: false, status: 401, runs: 0 },
  { path: '/bearer', replayed: false, status: 401, runs: 0 },
  { path: '/limited', replayed: false, status: 413, runs: 0 },
];

describe('rev33d hono (a): everyday paths without a timeout, over real HTTP', () => {
  for (const make of CLIENTS) {
    it(`${make.name}: each answer recorded and replayed byte for byte (or released), runs as due`, async () => {
      const runs = new Map<string, number>();
      const client = await make(build(runs) as unknown as Hono, servers);
      clients.push(client);
      for (const each of cases) {
        const key = keyOf(each.path.slice(1));
        const body = each.path === '/limited' ? JSON.stringify({ pad: BIG }) : '{"a":1}';
        const first = await client.send(each.path, { key, body });
        const again = await client.send(each.path, { key, body });
        const label = `${client.name} ${each.path}`;
        expect(first.status, label).toBe(each.status);
        expect(again.status, label).toBe(each.status);
        expect(again.headers['idempotent-replayed'], label).toBe(
          each.replayed ? 'true' : undefined,
        );
        expect(again.body.equals(first.body), `${label} body`).toBe(true);
        expect(recorded(again), label).toEqual(recorded(first));
        // Hono itself drops headers set by c.header() before a route assigns c.res unread
        // (checked without idem), as it does for a `Response` onError returns made apart
        // (`HTTPException#getResponse()`): not idem's to keep there.
        if (!HONO_DROPS_UPSTREAM.has(each.path)) {
          expect(first.headers['x-upstream'], label).toBe('u');
          expect(again.headers['x-upstream'], label).toBe('u');
        }
        expect(runs.get(each.path.slice(1)) ?? 0, label).toBe(each.runs);
        if (each.path === '/var') {
          expect(JSON.parse(first.body.toString())).toMatchObject({ user: 'u-1', key });
        }
        if (each.path === '/read-before') {
          expect(first.headers['x-pre-status'], label).toBe('200');
          expect(first.headers['x-post-type'], label).toMatch(/^application\/json/);
        }
        if (each.path === '/twice') {
          expect(first.body.toString(), label).toBe('second 1');
        }
        if (each.path === '/jsx' || each.path === '/jsx-stream') {
          expect(first.body.toString(), label).toContain('<body><p>jsx');
        }
        if (each.path === '/basic')
          expect(first.headers['www-authenticate'], label).toMatch(/^Basic/);
      }
    });
  }
});
