import { setTimeout as sleep } from 'node:timers/promises';
import { PROBLEM } from '@idem/http-conformance';
import { Hono, type MiddlewareHandler } from 'hono';
import { compress } from 'hono/compress';
import { timeout } from 'hono/timeout';
import { describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { keyOf, memoryOptions, settled, slowCharges, viaFetch } from './rev33b-support.js';

// rev33b FINDING (HIGH, exactly-once, fixed): off @hono/node-server, while the runtime has not
// read the timeout's 504 yet (a slow client, a caller of `app.fetch` that looks at the status
// first), a middleware after idem that reads `c.res` got that very answer: piping its body
// (`compress()`) took the body the runtime was to send (its stream locked: the client's 504 then
// broke), and the new `Response` was taken for the route's own: released as a 5xx, and a retry
// ran the handler a second time. Code inside idem's `next()` now always gets the copy once the
// answer went out.

const piped: MiddlewareHandler = async (c, next) => {
  await next();
  if (c.res.body) c.res = new Response(c.res.body.pipeThrough(new TransformStream()), c.res);
};

const inners: [string, MiddlewareHandler, Record<string, string>][] = [
  ['compress() after idem, gzip accepted', compress(), { 'accept-encoding': 'gzip' }],
  ['a TransformStream after idem', piped, {}],
];

describe('rev33b hono: app.fetch, the 504 not read yet when a middleware after idem transforms it', () => {
  for (const [name, inner, headers] of inners) {
    it(`${name}: the 504's body intact, held, then the marker; one run`, async () => {
      const counts = { runs: 0 };
      const app = new Hono();
      app.use(timeout(100));
      app.use(idempotency(memoryOptions()));
      app.use(inner);
      slowCharges(app, counts);
      const key = keyOf('unread');
      const first = await app.fetch(
        new Request('http://idem.test/charges', {
          method: 'POST',
          headers: { 'idempotency-key': key, 'content-type': 'application/json', ...headers },
          body: '{"a":1}',
        }),
      );
      expect(first.status).toBe(504);
      // Read only once the handler ended (and the middleware after idem ran).
      await sleep(400);
      expect(await first.text()).toBe('Gateway Timeout');
      const last = await settled(viaFetch(app, headers), key);
      expect([last.status, last.type]).toEqual([500, PROBLEM.outcomeNotRecorded]);
      expect(counts.runs).toBe(1);
    });
  }
});
