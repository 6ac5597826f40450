import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerType } from '@hono/node-server';
import { finalOnceStarted } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { compress } from 'hono/compress';
import { timeout } from 'hono/timeout';
import { afterAll, describe, expect, it } from 'vitest';
import { type HonoIdempotencyOptions, idempotency } from '../src/index.js';
import { poster, settled, TRANSPORTS } from './rev33b-support.js';
import { keyOf } from './rev33d-support.js';

// rev33d (d): two idempotency() with different configs (stores, scopes) on one route, and a
// sub-app mounted with app.route() where only the sub-app has idem.

const servers: ServerType[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

const tenantScoped = (extra: Partial<HonoIdempotencyOptions> = {}): HonoIdempotencyOptions => ({
  store: createMemoryStore(),
  scope: (c) => ({ principal: c.req.header('x-org') ?? 'none' }),
  leaseMs: 2_000,
  onWarning: () => {},
  ...extra,
});
const globalScoped = (): HonoIdempotencyOptions => ({
  store: createMemoryStore(),
  scope: 'global',
  leaseMs: 2_000,
  onWarning: () => {},
});

describe('rev33d hono (d): two idempotency() configs on one route', () => {
  for (const transport of TRANSPORTS) {
    for (const [policyName, extra, between] of [
      ['finalOn2xx (default)', {}, false],
      ['finalOnceStarted on the outer one', { isFinal: finalOnceStarted }, false],
      [
        'finalOnceStarted on the outer one, a rewrap between the two',
        { isFinal: finalOnceStarted },
        true,
      ],
    ] as const) {
      it(`${transport}, ${policyName}: one run per operation, replays byte for byte, the inner 409 never recorded by the outer`, async () => {
        let runs = 0;
        const contexts: object[] = [];
        const app = new Hono();
        app.post(
          '/charges',
          idempotency(tenantScoped(extra)),
          async (c, next) => {
            await next();
            if (!between) return;
            c.res = new Response(c.res.body, c.res);
            c.header('x-between', '1');
          },
          idempotency(globalScoped()),
          async (c) => {
            contexts.push(c);
            runs += 1;
            const run = runs;
            await sleep(150);
            return c.json({ run, tenant: c.req.header('x-org') }, 201);
          },
        );
        const t1 = await poster(transport, app, servers, { 'x-org': 't1' });
        const t2 = await poster(transport, app, servers, { 'x-org': 't2' });
        const key = keyOf('two');
        const first = t1(key);
        await sleep(40);
        // The outer (tenant t2) takes its key; the inner (global) sees t1's in progress: 409.
        const busy = await t2(key);
        expect(busy.status, busy.body).toBe(409);
        expect((await first).status).toBe(201);
        const again = await t1(key);
        expect([again.status, again.replayed]).toEqual([201, 'true']);
        expect(again.body).toBe((await first).body);
        // t2 retries once t1 ended: the inner replays t1's outcome (global scope), never the 409.
        const later = await settled(t2, key);
        expect(later.status, JSON.stringify(later)).toBe(201);
        expect(runs).toBe(1);
        for (const c of contexts) expect(Object.hasOwn(c, 'res')).toBe(false);
      });
    }
  }
});

describe('rev33d hono (d): a sub-app with idem mounted by app.route()', () => {
  for (const transport of TRANSPORTS) {
    it(`${transport}: recorded, 409 while it runs, replayed byte for byte, one run; parent compress and headers kept`, async () => {
      let runs = 0;
      const sub = new Hono();
      sub.use(idempotency(globalScoped()));
      sub.post('/charges', async (c) => {
        runs += 1;
        await sleep(100);
        c.header('x-sub', String(runs));
        return c.json({ run: runs, pad: 'p'.repeat(2000) }, 201);
      });
      sub.post('/fails', () => {
        runs += 1;
        throw new Error('sub boom');
      });
      sub.onError((error, c) => c.json({ sub: error.message }, 500));
      const app = new Hono();
      app.use(compress());
      app.use(async (c, next) => {
        c.header('x-parent', 'p');
        await next();
      });
      app.route('/api', sub);
      const post = await poster(
        transport,
        app,
        servers,
        { 'accept-encoding': 'gzip' },
        '/api/charges',
      );
      const slash = await poster(
        transport,
        app,
        servers,
        { 'accept-encoding': 'gzip' },
        '/api/charges/',
      );
      const fails = await poster(transport, app, servers, {}, '/api/fails');
      const key = keyOf('sub');
      const first = post(key);
      await sleep(30);
      expect((await post(key)).status).toBe(409);
      const done = await first;
      expect(done.status).toBe(201);
      expect(done.headers['x-parent']).toBe('p');
      const again = await post(key);
      expect([again.status, again.replayed]).toEqual([201, 'true']);
      expect(again.body).toBe(done.body);
      expect(again.headers['content-encoding']).toBe(done.headers['content-encoding']);
      expect(again.headers['x-parent']).toBe('p');
      // Another spelling of the same route (no strict routing): the same operation.
      // (the raw path is in the fingerprint: replayed or 422, never run again; README).
      const spelled = await slash(key);
      expect([201, 422]).toContain(spelled.status);
      expect(runs).toBe(1);
      // The sub-app's onError: released, run again after.
      const failKey = keyOf('sub-fails');
      expect((await fails(failKey)).status).toBe(500);
      expect((await fails(failKey)).status).toBe(500);
      expect(runs).toBe(3);
    });

    it(`${transport}: a timeout in the parent over the sub-app's idem: 504, then the marker, one run`, async () => {
      let runs = 0;
      const sub = new Hono();
      sub.use(idempotency(globalScoped()));
      sub.post('/charges', async (c) => {
        runs += 1;
        await sleep(300);
        return c.json({ run: runs }, 201);
      });
      const app = new Hono();
      app.use(timeout(100));
      app.route('/api', sub);
      const post = await poster(transport, app, servers, {}, '/api/charges');
      const key = keyOf('sub-timeout');
      expect((await post(key)).status).toBe(504);
      const last = await settled(post, key);
      expect(last.status).toBe(500);
      expect(String(last.type)).toContain('outcome-not-recorded');
      expect(runs).toBe(1);
    });
  }
});
