import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerType } from '@hono/node-server';
import { type Context, Hono, type MiddlewareHandler } from 'hono';
import { compress } from 'hono/compress';
import { cors } from 'hono/cors';
import { etag } from 'hono/etag';
import { secureHeaders } from 'hono/secure-headers';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { keyOf, memoryOptions, poster, TRANSPORTS } from './rev33b-support.js';

// rev33b: an app WITHOUT any timeout. Reading `c.res`, `c.header()` and rewrapping after
// `next()` must change neither the answer nor its recording: recorded, replayed, one run.

const servers: ServerType[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

const BIG = 'x'.repeat(4096);

const readHeaders: MiddlewareHandler = async (c, next) => {
  await next();
  c.header('x-seen-type', c.res.headers.get('content-type') ?? 'none');
};
const rewrap: MiddlewareHandler = async (c, next) => {
  await next();
  c.res = new Response(c.res.body, c.res);
  c.header('x-inner', '1');
};

const middlewares: [string, MiddlewareHandler[], Record<string, string>][] = [
  ['compress() after idem, gzip accepted', [compress()], { 'accept-encoding': 'gzip' }],
  ['etag() after idem', [etag()], {}],
  ['secureHeaders() after idem', [secureHeaders()], {}],
  ['cors() after idem', [cors({ origin: 'https://a.test' })], { origin: 'https://a.test' }],
  ['a middleware reading c.res.headers then c.header()', [readHeaders], {}],
  ['a rewrap and c.header() after next()', [rewrap], {}],
  [
    'compress, etag, secureHeaders and a rewrap',
    [compress(), etag(), secureHeaders(), rewrap],
    { 'accept-encoding': 'gzip' },
  ],
];

type Route = (c: Context, run: number) => Response | Promise<Response>;
const routes: [string, Route][] = [
  [
    'c.header() then c.json()',
    (c, run) => {
      c.header('x-route', String(run));
      return c.json({ run, big: BIG }, 201);
    },
  ],
  [
    'a streamed body in chunks',
    (c, run) => {
      c.header('content-type', 'text/plain');
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          await sleep(5);
          sent += 1;
          if (sent > 3) controller.close();
          else controller.enqueue(new TextEncoder().encode(`run ${run} part ${sent} ${BIG}\n`));
        },
      });
      return c.body(body, 201);
    },
  ],
  [
    'c.res read by the route, then c.body()',
    (c, run) => {
      const before = c.res.headers.get('x-before') ?? 'none';
      return c.body(`run ${run} ${before} ${BIG}`, 201, { 'content-type': 'text/plain' });
    },
  ],
];

describe('rev33b hono: no timeout, middlewares that read or rewrap c.res after next()', () => {
  for (const transport of TRANSPORTS) {
    for (const [mwName, inner, headers] of middlewares) {
      for (const [routeName, route] of routes) {
        it(`${transport}, ${mwName}, ${routeName}: recorded and replayed, one run`, async () => {
          let runs = 0;
          const app = new Hono();
          app.use(async (c, next) => {
            c.header('x-before', 'b');
            await next();
          });
          app.use(idempotency(memoryOptions()));
          for (const middleware of inner) app.use(middleware);
          app.post('/charges', async (c) => {
            runs += 1;
            const run = runs;
            await sleep(20);
            return route(c, run);
          });
          const post = await poster(transport, app, servers, headers);
          const key = keyOf('normal');
          const first = await post(key);
          expect(first.status).toBe(201);
          expect(first.type).toBeUndefined();
          const again = await post(key);
          expect([again.status, again.replayed]).toEqual([201, 'true']);
          expect(again.body).toBe(first.body);
          expect(again.headers['content-encoding']).toBe(first.headers['content-encoding']);
          expect(runs).toBe(1);
        });
      }
    }
  }
});
