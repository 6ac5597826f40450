import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerType } from '@hono/node-server';
import { Hono, type MiddlewareHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { timeout } from 'hono/timeout';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { keyOf, memoryOptions, poster, settled, TRANSPORTS } from './rev33b-support.js';

// rev33d (b): throws inside the accessors idem puts on the context while next() runs (Hono's
// own `res` setter throwing through idem's, a `c.header()` through idem's wrapper onto immutable
// headers, an app.onError that throws itself) leave the context Hono's own for the middleware
// before idem and for Hono's finalize: the answer still goes out, nothing stays on the context.

const servers: ServerType[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

interface Seen {
  ownRes: boolean;
  headerSame: boolean;
  errorPlain: boolean;
  /** `c.header()` then a read of `c.res` by the middleware before idem, after next(). */
  headerWorks: boolean;
}

/** What the middleware before idem reads of `c.error` once next() settled (a logger would). */
const errors: unknown[] = [];

function inspect(seen: Seen[]): MiddlewareHandler {
  return async (c, next) => {
    const header = c.header;
    try {
      await next();
    } finally {
      const error = Object.getOwnPropertyDescriptor(c, 'error');
      errors.push(c.error);
      let headerWorks = false;
      try {
        c.header('x-outer', 'o');
        headerWorks = c.res.headers.get('x-outer') === 'o';
      } catch {
        headerWorks = false;
      }
      seen.push({
        ownRes: Object.hasOwn(c, 'res'),
        headerSame: c.header === header,
        errorPlain: error === undefined || 'value' in error,
        headerWorks,
      });
    }
  };
}

const clean: Seen = { ownRes: false, headerSame: true, errorPlain: true, headerWorks: true };

const contexts: object[] = [];

function build(seen: Seen[], withTimeout: boolean, counts: { runs: number }): Hono {
  const app = new Hono();
  app.onError((error, c) => {
    if (error instanceof HTTPException) return error.getResponse();
    if (error.message === 'onError throws') throw new Error('onError itself threw');
    return c.json({ error: error.message }, 500);
  });
  app.use(inspect(seen));
  if (withTimeout) app.use(timeout(100));
  app.use(idempotency(memoryOptions()));
  app.post('/setter-throws', async (c) => {
    counts.runs += 1;
    c.header('x-route', '1');
    const used = new Response('used', { status: 201 });
    await used.text();
    // Hono's setter copies it (`new Response(used.body, used)`): throws through idem's setter.
    c.res = used;
    return c.res;
  });
  app.post('/immutable-headers', async (c) => {
    counts.runs += 1;
    // A `Response` whose headers cannot change (as `fetch()` gives), then `c.header()` on it.
    c.res = Response.redirect('http://idem.test/elsewhere', 302);
    c.header('x-late', '1');
    return c.res;
  });
  app.post('/on-error-throws', async () => {
    counts.runs += 1;
    throw new Error('onError throws');
  });
  app.post('/late-setter-throws', async (c) => {
    counts.runs += 1;
    contexts.push(c);
    await sleep(250);
    const used = new Response('used', { status: 201 });
    await used.text();
    c.res = used;
    return c.res;
  });
  return app;
}

describe('rev33d hono (b): throws inside the accessors leave the context whole', () => {
  for (const transport of TRANSPORTS) {
    for (const withTimeout of [false, true]) {
      const label = `${transport}${withTimeout ? ', hono/timeout before idem' : ''}`;
      for (const [path, status] of [
        ['/setter-throws', 500],
        ['/immutable-headers', 302],
        ['/on-error-throws', 500],
      ] as const) {
        it(`${label} ${path}: a ${status}, released (run again), the context Hono's own after`, async () => {
          const seen: Seen[] = [];
          const counts = { runs: 0 };
          const post = await poster(transport, build(seen, withTimeout, counts), servers, {}, path);
          errors.length = 0;
          const key = keyOf('throws');
          const first = await post(key);
          expect(first.status).toBe(status);
          const again = await post(key);
          expect(again.status).toBe(status);
          expect(again.replayed).toBeUndefined();
          expect(counts.runs).toBe(2);
          // onError that throws: Hono's dispatch throws past the middleware before idem.
          expect(seen.map(({ headerWorks, ...rest }) => rest)).toEqual(
            [clean, clean].map(({ headerWorks, ...rest }) => rest),
          );
          if (path !== '/on-error-throws') expect(seen).toEqual([clean, clean]);
          // The handler's error, set through idem's c.error accessor, is Hono's plain field after.
          if (path === '/setter-throws') {
            expect(errors).toHaveLength(2);
            for (const error of errors) expect(error).toBeInstanceOf(TypeError);
          }
        });
      }
    }
    it(`${transport}, hono/timeout before idem: a route overtaken whose late c.res assignment throws is released, run after, context whole`, async () => {
      const seen: Seen[] = [];
      const counts = { runs: 0 };
      const post = await poster(
        transport,
        build(seen, true, counts),
        servers,
        {},
        '/late-setter-throws',
      );
      contexts.length = 0;
      const key = keyOf('late-throws');
      expect((await post(key)).status).toBe(504);
      const last = await settled(post, key);
      // It threw after the answer went out: judged as a throw (released), run again after.
      expect(last.status, JSON.stringify(last)).toBe(504);
      expect(counts.runs).toBe(2);
      await sleep(400);
      // The outer chain ended (504) while idem's next() still ran: checked on the contexts now.
      expect(contexts.length).toBe(2);
      for (const c of contexts) {
        expect(Object.hasOwn(c, 'res')).toBe(false);
        expect('value' in (Object.getOwnPropertyDescriptor(c, 'error') ?? { value: 1 })).toBe(true);
      }
      // And the outer chain's own c.header() and c.res read worked while it was on.
      expect(seen.every((each) => each.headerWorks)).toBe(true);
    });
  }
});
