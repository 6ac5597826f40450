import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerType } from '@hono/node-server';
import { PROBLEM } from '@idem/http-conformance';
import { Hono, type MiddlewareHandler } from 'hono';
import { compress } from 'hono/compress';
import { secureHeaders } from 'hono/secure-headers';
import { timeout } from 'hono/timeout';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { keyOf, memoryOptions, poster, settled, TRANSPORTS } from './rev33b-support.js';

// rev33b FINDING (HIGH, exactly-once, fixed): off @hono/node-server (`app.fetch` directly), a
// middleware mounted BEFORE `hono/timeout` (so before idem, as the README asks of `compress()`)
// that puts a new `Response` on `c.res` after `next()` (compress() for a client accepting gzip,
// a rewrap adding a header) did so after the timeout's answer counted as gone out: taken for an
// assignment of the route's own, the 504 (compressed) was recorded as the handler's and released,
// and a retry after the first handler ended ran it a second time.

const servers: ServerType[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

const outerRewrap: MiddlewareHandler = async (c, next) => {
  await next();
  c.res = new Response(c.res.body, c.res);
  c.res.headers.set('x-outer', '1');
};

const outers: [string, MiddlewareHandler, Record<string, string>][] = [
  ['compress() before the timeout, gzip accepted', compress(), { 'accept-encoding': 'gzip' }],
  ['a rewrap before the timeout', outerRewrap, {}],
  ['secureHeaders() before the timeout', secureHeaders(), {}],
];

describe('rev33b hono: a middleware before hono/timeout that rewraps its answer', () => {
  for (const transport of TRANSPORTS) {
    for (const [name, outer, headers] of outers) {
      it(`${transport}, ${name}: held, then the marker; one run`, async () => {
        let runs = 0;
        const app = new Hono();
        app.use(outer);
        app.use(timeout(100));
        app.use(idempotency(memoryOptions()));
        app.post('/charges', async (c) => {
          runs += 1;
          await sleep(300);
          return c.json({ runs }, 201);
        });
        const post = await poster(transport, app, servers, headers);
        const key = keyOf('outer');
        expect((await post(key)).status).toBe(504);
        const last = await settled(post, key);
        expect([last.status, last.type]).toEqual([500, PROBLEM.outcomeNotRecorded]);
        expect(runs).toBe(1);
      });

      it(`${transport}, ${name}, a fast handler: recorded and replayed`, async () => {
        let runs = 0;
        const app = new Hono();
        app.use(outer);
        app.use(timeout(1000));
        app.use(idempotency(memoryOptions()));
        app.post('/charges', async (c) => {
          runs += 1;
          return c.json({ runs, pad: 'y'.repeat(2048) }, 201);
        });
        const post = await poster(transport, app, servers, headers);
        const key = keyOf('outer-fast');
        const first = await post(key);
        expect(first.status).toBe(201);
        const again = await post(key);
        expect([again.status, again.replayed]).toEqual([201, 'true']);
        expect(runs).toBe(1);
      });
    }
  }
});
