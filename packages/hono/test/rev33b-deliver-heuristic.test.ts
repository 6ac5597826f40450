import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerType } from '@hono/node-server';
import { Hono, type MiddlewareHandler } from 'hono';
import { compress } from 'hono/compress';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { deliverEarly } from './outside-answer-support.js';
import { keyOf, memoryOptions, poster, settled, TRANSPORTS } from './rev33b-support.js';

// rev33b: what rev33b-timeout-transform's fix takes as made from the outside answer (a copy of it
// whose body was read) must not catch a route's own answer: apps/llm-api's `deliver` answers 503
// early, its route calls `c.header()` (which reads `c.res`: the copy) and then puts its own answer
// on `c.res`, which a middleware after idem then transforms (reads its body).

const servers: ServerType[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

const upperCase: MiddlewareHandler = async (c, next) => {
  await next();
  const text = await c.res.text();
  c.res = new Response(text.toUpperCase(), c.res);
};

const transforms: [string, MiddlewareHandler, Record<string, string>][] = [
  ['compress() after idem', compress({ threshold: 0 }), { 'accept-encoding': 'gzip' }],
  ['c.res.text() into a new body after idem', upperCase, {}],
];

describe('rev33b hono: deliver, the route calls c.header() then answers, a transform after idem', () => {
  for (const transport of TRANSPORTS) {
    for (const [name, inner, headers] of transforms) {
      it(`${transport}, ${name}: the route's answer recorded and replayed, one run`, async () => {
        let runs = 0;
        const background: Promise<unknown>[] = [];
        const app = new Hono();
        app.use(deliverEarly(background));
        app.use(idempotency(memoryOptions()));
        app.use(inner);
        app.post('/charges', async (c) => {
          runs += 1;
          await sleep(200);
          c.header('x-run', String(runs));
          c.res = new Response(`{"run":${runs}}`, {
            status: 201,
            headers: { 'content-type': 'application/json' },
          });
          return c.res;
        });
        const post = await poster(transport, app, servers, headers);
        const key = keyOf('deliver');
        expect((await post(key)).status).toBe(503);
        await sleep(400);
        await Promise.all(background);
        const retry = await settled(post, key);
        expect([retry.status, retry.replayed, retry.body.toLowerCase()]).toEqual([
          201,
          'true',
          '{"run":1}',
        ]);
        expect(runs).toBe(1);
      });
    }
  }

  // hono34: the route's own `c.text()` reads `c.finalized` (true since deliver's 503), as Hono's
  // compose does when it drops a returned `Response`: not taken for that drop (the marker).
  for (const transport of TRANSPORTS) {
    it(`${transport}, the route puts c.text() on c.res itself: recorded and replayed, one run`, async () => {
      let runs = 0;
      const background: Promise<unknown>[] = [];
      const app = new Hono();
      app.use(deliverEarly(background));
      app.use(idempotency(memoryOptions()));
      app.post('/charges', async (c) => {
        runs += 1;
        await sleep(200);
        c.res = undefined;
        c.res = c.text(`run ${runs}`);
        return c.res;
      });
      const post = await poster(transport, app, servers);
      const key = keyOf('deliver-text');
      expect((await post(key)).status).toBe(503);
      await Promise.all(background);
      const retry = await settled(post, key);
      expect([retry.status, retry.replayed, retry.body]).toEqual([200, 'true', 'run 1']);
      expect(runs).toBe(1);
    });
  }
});
