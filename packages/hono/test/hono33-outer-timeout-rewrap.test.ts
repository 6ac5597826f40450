import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerType } from '@hono/node-server';
import { PROBLEM, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { type Context, Hono, type MiddlewareHandler } from 'hono';
import { timeout } from 'hono/timeout';
import { afterAll, describe, expect, it } from 'vitest';
import { type HonoIdempotencyOptions, idempotency } from '../src/index.js';
import { serveOnLoopback } from './keyed-post-support.js';
import { deliverEarly, returningTimeout } from './outside-answer-support.js';

// hono33 FINDING 1 (HIGH, exactly-once): `hono/timeout` mounted before idem answers 504 while the
// handler runs; a middleware mounted after idem that rewraps `c.res` after `await next()`
// (`c.res = new Response(c.res.body, c.res)`, a copy with a header added, or `c.header()`) threw
// on the timeout's answer, whose body @hono/node-server (or the runtime) had read to send it; Hono
// set `c.error`, taken for the handler's throw: released, and a retry after the handler ran ran
// it a second time. Now code after the middleware that reads `c.res` (or calls `c.header()`) once
// the answer went out gets a copy of it with an empty body of its own, and a `Response` put on
// `c.res` that carries that body is told apart from the route's own (the apps/llm-api `deliver`
// pattern, test/late-answer-outside.test.ts, still recorded): the `answered_outside` marker, as
// without the rewrapping middleware.
// hono33 FINDING 3 (HIGH, exactly-once; was a documented limit): off @hono/node-server (`app.fetch`
// called directly, as Bun, Deno and workers do) the same overtaken handler was released once it
// settled, and a later retry ran it again. An answer the outer chain puts on `c.res` from outside
// this middleware's own `next()` (told by `AsyncLocalStorage`) while `next()` runs is now taken
// as the answer that went out, where the runtime has `AsyncLocalStorage`.

const LEASE = 300;
const servers: ServerType[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

function options(extra: Partial<HonoIdempotencyOptions> = {}): HonoIdempotencyOptions {
  return {
    store: createMemoryStore(),
    scope: 'global',
    leaseMs: LEASE,
    onWarning: () => {},
    ...extra,
  };
}

/** Rewraps the answer after `next()`: a copy of it with a header added. */
const copyWithHeader: MiddlewareHandler = async (c, next) => {
  await next();
  const copy = new Response(c.res.body, c.res);
  copy.headers.set('x-inner', '1');
  c.res = undefined;
  c.res = copy;
};

/** Rewraps the answer after `next()` the short way, merged by Hono's setter. */
const plainRewrap: MiddlewareHandler = async (c, next) => {
  await next();
  c.res = new Response(c.res.body, c.res);
};

/** `hono/timeout` (100 ms) before idem, `inner` after it, `POST /charges` answered by `route`. */
function appWith(inner: MiddlewareHandler | undefined, route: (c: Context) => Promise<Response>) {
  const app = new Hono();
  app.use(timeout(100));
  app.use(idempotency(options()));
  if (inner) app.use(inner);
  app.post('/charges', route);
  return app;
}

async function start(app: Hono): Promise<string> {
  return `http://127.0.0.1:${await serveOnLoopback(app, servers)}`;
}

let counter = 0;
const keyOf = (name: string) => `hono33-${name}-${process.pid}-${++counter}`;

interface Answer {
  status: number;
  type: unknown;
  body: string;
  replayed: string | undefined;
}

/** One POST over loopback HTTP (@hono/node-server). */
function overHttp(url: string) {
  return async (key: string): Promise<Answer> => {
    const answer = await send(url, '/charges', { key, body: { a: 1 }, timeoutMs: 10_000 });
    const body = answer.body.toString();
    const problem = String(answer.headers['content-type']).startsWith('application/problem+json');
    const replayed = answer.headers['idempotent-replayed'];
    return {
      status: answer.status,
      type: problem ? (JSON.parse(body) as { type?: unknown }).type : undefined,
      body,
      replayed: typeof replayed === 'string' ? replayed : undefined,
    };
  };
}

/** One POST through `app.fetch` directly, as Bun, Deno and workers call it; the body read whole. */
function viaFetch(app: Hono) {
  return async (key: string): Promise<Answer> => {
    const response = await app.fetch(
      new Request('http://idem.test/charges', {
        method: 'POST',
        headers: { 'idempotency-key': key, 'content-type': 'application/json' },
        body: '{"a":1}',
      }),
    );
    const body = await response.text();
    const problem = response.headers.get('content-type')?.startsWith('application/problem+json');
    return {
      status: response.status,
      type: problem ? (JSON.parse(body) as { type?: unknown }).type : undefined,
      body,
      replayed: response.headers.get('idempotent-replayed') ?? undefined,
    };
  };
}

/** Retries until the answer is not 409 (bounded). */
async function settled(post: (key: string) => Promise<Answer>, key: string) {
  let last = await post(key);
  for (let i = 0; i < 200 && last.status === 409; i += 1) {
    await sleep(20);
    last = await post(key);
  }
  return last;
}

/** A route overtaken by the 100 ms timeout that then runs to its end, counting its runs. */
function slowRoute(counts: { runs: number }) {
  return async (c: Context) => {
    counts.runs += 1;
    await sleep(300);
    return c.json({ run: counts.runs }, 201);
  };
}

const rewraps: [string, MiddlewareHandler | undefined][] = [
  ['a copy with a header added', copyWithHeader],
  ['c.res = new Response(c.res.body, c.res)', plainRewrap],
  ['no inner middleware', undefined],
];

describe('hono33 hono: hono/timeout before idem, a handler overtaken that runs to its end', () => {
  for (const transport of ['@hono/node-server over HTTP', 'app.fetch directly'] as const) {
    for (const [name, inner] of rewraps) {
      it(`${transport}, ${name}: held (409), then the marker; one run`, async () => {
        const counts = { runs: 0 };
        const app = appWith(inner, slowRoute(counts));
        const post =
          transport === 'app.fetch directly' ? viaFetch(app) : overHttp(await start(app));
        const key = keyOf('overtaken');
        expect((await post(key)).status).toBe(504);
        expect((await post(key)).status).toBe(409);
        const last = await settled(post, key);
        expect([last.status, last.type]).toEqual([500, PROBLEM.outcomeNotRecorded]);
        expect((await post(key)).status).toBe(500);
        expect(counts.runs).toBe(1);
      });
    }
  }

  for (const transport of ['@hono/node-server over HTTP', 'app.fetch directly'] as const) {
    it(`${transport}, a rewrap after: a handler that throws after the 504 is released (a retry runs it)`, async () => {
      let runs = 0;
      const app = appWith(copyWithHeader, async (c) => {
        runs += 1;
        const run = runs;
        if (run === 1) {
          await sleep(300);
          throw new Error('failed after the timeout');
        }
        return c.json({ run }, 201);
      });
      const post = transport === 'app.fetch directly' ? viaFetch(app) : overHttp(await start(app));
      const key = keyOf('throws');
      expect((await post(key)).status).toBe(504);
      const last = await settled(post, key);
      expect([last.status, last.body]).toEqual([201, JSON.stringify({ run: 2 })]);
      expect(runs).toBe(2);
    });

    it(`${transport}, c.header() after next(): held (409), then the marker; one run`, async () => {
      const counts = { runs: 0 };
      const header: MiddlewareHandler = async (c, next) => {
        await next();
        c.header('x-inner', '1');
      };
      const app = appWith(header, slowRoute(counts));
      const post = transport === 'app.fetch directly' ? viaFetch(app) : overHttp(await start(app));
      const key = keyOf('header');
      expect((await post(key)).status).toBe(504);
      expect((await post(key)).status).toBe(409);
      const last = await settled(post, key);
      expect([last.status, last.type]).toEqual([500, PROBLEM.outcomeNotRecorded]);
      expect(counts.runs).toBe(1);
    });
  }

  it('app.fetch directly, a timeout that answers by returning (no throw): the marker; one run', async () => {
    const counts = { runs: 0 };
    const app = new Hono();
    app.use(returningTimeout());
    app.use(idempotency(options()));
    app.use(plainRewrap);
    app.post('/charges', slowRoute(counts));
    const post = viaFetch(app);
    const key = keyOf('returning');
    expect((await post(key)).status).toBe(503);
    expect((await post(key)).status).toBe(409);
    const last = await settled(post, key);
    expect([last.status, last.type]).toEqual([500, PROBLEM.outcomeNotRecorded]);
    expect(counts.runs).toBe(1);
  });

  it('app.fetch directly, two idempotency() nested, no timeout: recorded and replayed', async () => {
    const counts = { runs: 0 };
    const app = new Hono();
    app.use(idempotency(options()));
    app.use(idempotency(options()));
    app.use(plainRewrap);
    app.post('/charges', async (c) => {
      counts.runs += 1;
      await sleep(50);
      return c.json({ run: counts.runs }, 201);
    });
    const post = viaFetch(app);
    const key = keyOf('nested-fast');
    expect((await post(key)).status).toBe(201);
    const again = await post(key);
    expect([again.status, again.replayed, again.body]).toEqual([201, 'true', '{"run":1}']);
    expect(counts.runs).toBe(1);
  });

  it('app.fetch directly: a handler that beats the timeout is recorded and replayed', async () => {
    let runs = 0;
    const app = appWith(plainRewrap, async (c) => {
      runs += 1;
      return c.json({ run: runs }, 201);
    });
    const post = viaFetch(app);
    const key = keyOf('fast');
    expect((await post(key)).status).toBe(201);
    const again = await post(key);
    expect([again.status, again.replayed, again.body]).toEqual([201, 'true', '{"run":1}']);
    expect(runs).toBe(1);
  });
});

describe('hono33 hono: an early outside answer, the route assigning c.res itself (deliver)', () => {
  for (const transport of ['@hono/node-server over HTTP', 'app.fetch directly'] as const) {
    for (const [name, inner] of rewraps) {
      it(`${transport}, ${name}: the route's 201 is recorded and replayed, one run`, async () => {
        let runs = 0;
        const background: Promise<unknown>[] = [];
        const deliver = deliverEarly(background);
        const app = new Hono();
        app.use(deliver);
        app.use(idempotency(options()));
        if (inner) app.use(inner);
        app.post('/charges', async (c) => {
          runs += 1;
          await sleep(200);
          c.res = undefined;
          c.res = new Response(JSON.stringify({ run: runs }), {
            status: 201,
            headers: { 'content-type': 'application/json' },
          });
          return c.res;
        });
        const post =
          transport === 'app.fetch directly' ? viaFetch(app) : overHttp(await start(app));
        const key = keyOf('deliver');
        expect((await post(key)).status).toBe(503);
        await sleep(400);
        await Promise.all(background);
        const retry = await settled(post, key);
        expect([retry.status, retry.replayed, retry.body]).toEqual([201, 'true', '{"run":1}']);
        expect(runs).toBe(1);
      });
    }
  }
});
