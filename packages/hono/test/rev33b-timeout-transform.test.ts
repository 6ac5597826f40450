import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerType } from '@hono/node-server';
import { PROBLEM } from '@idem/http-conformance';
import { type Context, Hono, type MiddlewareHandler } from 'hono';
import { compress } from 'hono/compress';
import { timeout } from 'hono/timeout';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { keyOf, memoryOptions, poster, settled, TRANSPORTS } from './rev33b-support.js';

// rev33b: `hono/timeout` before idem answers 504 while the handler runs; a middleware after idem
// then transforms the timeout's answer (its body piped or read) rather than copying it.

const servers: ServerType[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

function slowRoute(counts: { runs: number }) {
  return async (c: Context) => {
    counts.runs += 1;
    await sleep(300);
    return c.json({ run: counts.runs }, 201);
  };
}

function appWith(inner: MiddlewareHandler, counts: { runs: number }) {
  const app = new Hono();
  app.use(timeout(100));
  app.use(idempotency(memoryOptions()));
  app.use(inner);
  app.post('/charges', slowRoute(counts));
  return app;
}

/** Upper-cases a text answer after `next()`: reads the body, a new one of its own. */
const upperCase: MiddlewareHandler = async (c, next) => {
  await next();
  if (!c.res.headers.get('content-type')?.startsWith('text/')) return;
  const text = await c.res.text();
  c.res = new Response(text.toUpperCase(), c.res);
};

/** Pipes the body through a TransformStream (a byte counter, a tracer). */
const piped: MiddlewareHandler = async (c, next) => {
  await next();
  if (!c.res.body) return;
  c.res = new Response(c.res.body.pipeThrough(new TransformStream()), c.res);
};

const transforms: [string, MiddlewareHandler, Record<string, string>][] = [
  [
    "Hono's compress() after idem, the client accepting gzip",
    compress(),
    { 'accept-encoding': 'gzip' },
  ],
  ['a middleware that pipes c.res.body through a TransformStream', piped, {}],
  ['a middleware that reads c.res.text() and answers a new body from it', upperCase, {}],
];

describe('rev33b hono: hono/timeout before idem, the 504 transformed by a middleware after it', () => {
  for (const transport of TRANSPORTS) {
    for (const [name, inner, headers] of transforms) {
      // rev33b FINDING (HIGH, exactly-once): the transformed 504 was taken for the route's own
      // answer (assigned to c.res after the answer went out, a body that is not the copy's), and
      // released as a 5xx: a retry after the first handler ended ran it a second time.
      it(`${transport}, ${name}: held, then the marker; one run`, async () => {
        const counts = { runs: 0 };
        const post = await poster(transport, appWith(inner, counts), servers, headers);
        const key = keyOf('transform');
        expect((await post(key)).status).toBe(504);
        const last = await settled(post, key);
        expect([last.status, last.type]).toEqual([500, PROBLEM.outcomeNotRecorded]);
        expect(counts.runs).toBe(1);
      });
    }
  }

  // rev33b FINDING (HIGH, exactly-once, fixed in hono34): a middleware after idem that replaces
  // any 5xx with a body of its own without reading the old one (`c.res = c.json({ error },
  // c.res.status)`) was taken for the route's own answer once the timeout's went out: released as
  // a 5xx, and a retry after the first handler ended ran it a second time. Now the route's
  // `Response` that Hono's compose drops (it reads `c.finalized`, true since the timeout's answer)
  // before anything was put on `c.res` tells that the handler's own answer is lost: what code
  // after idem puts there since is made in place of the timeout's answer (the marker).
  for (const transport of TRANSPORTS) {
    it(`${transport}, a middleware after idem that answers its own JSON for any 5xx: one run`, async () => {
      const counts = { runs: 0 };
      const problemJson: MiddlewareHandler = async (c, next) => {
        await next();
        if (c.res.status >= 500) {
          const status = c.res.status as 500;
          c.res = undefined;
          c.res = c.json({ error: 'upstream' }, status);
        }
      };
      const post = await poster(transport, appWith(problemJson, counts), servers);
      const key = keyOf('own-5xx');
      expect((await post(key)).status).toBe(504);
      const last = await settled(post, key);
      expect(last.status).toBe(500);
      expect(counts.runs).toBe(1);
    });
  }
});
