import { json, lateStartProbe, listening, type RunningApp, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Router from '@koa/router';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Mutation audit of the adapter (wt/mutadapt): each test fails under one small change of
// src/ that no earlier test noticed (or on main's source, for the finding), and passes now.

let counter = 0;
const newKey = () => `mutadapt-${process.pid}-${Date.now()}-${++counter}`;

const LEASE = 300;
/** The /late route's probe of the late start. */
const late = lateStartProbe(LEASE);

describe('@idem/koa mutation audit (mutadapt)', () => {
  let app: RunningApp;
  const runs: string[] = [];
  beforeAll(async () => {
    const koa = new Koa();
    // One principal for every caller: user ids are per tenant (the tenant is the host's).
    const idem = idempotency({
      store: createMemoryStore(),
      scope: () => ({ principal: 'user-7' }),
      onWarning: () => {},
    });
    // A router whose RegExp host serves every tenant's subdomain with one route.
    const tenants = new Router({ host: /^[a-z]+\.tenants\.example(:\d+)?$/ });
    tenants.post('/charges', idem, (ctx) => {
      runs.push(ctx.host);
      ctx.status = 201;
      ctx.body = { tenant: ctx.host.split('.')[0] };
    });
    koa.use(tenants.routes());
    // Two routers whose host lists share their first host and serve one path.
    for (const hosts of [
      ['shared.example', 'b.example'],
      ['shared.example', 'c.example'],
    ]) {
      const router = new Router({ host: hosts });
      router.post('/listed', idem, (ctx) => {
        runs.push(`listed ${hosts.join(',')}`);
        ctx.status = 201;
        ctx.body = { router: hosts.join(',') };
      });
      koa.use(router.routes());
    }
    // The hold comes `armed` microtasks after the miss: some depths land between the
    // acquisition and the route's start, where the middleware must judge the start late.
    const lateIdem = idempotency({
      store: createMemoryStore(),
      scope: () => ({ principal: 'user-7' }),
      leaseMs: LEASE,
      storeTimeoutMs: 1_000,
      onWarning: () => {},
      onEvent: late.onEvent,
    });
    const plain = new Router();
    plain.post('/late', lateIdem, (ctx) => {
      late.started();
      ctx.status = 201;
      ctx.body = { ok: true };
    });
    koa.use(plain.routes());
    app = await listening(koa.listen(0, '127.0.0.1'));
  });
  afterAll(() => app.close());

  it("names the host a RegExp host router served: one tenant never gets another tenant's answer", async () => {
    const key = newKey();
    const acme = await send(app.url, '/charges', {
      key,
      body: { amount: 1 },
      headers: { host: 'acme.tenants.example' },
    });
    expect([acme.status, json(acme)]).toEqual([201, { tenant: 'acme' }]);
    const globex = await send(app.url, '/charges', {
      key,
      body: { amount: 1 },
      headers: { host: 'globex.tenants.example' },
    });
    expect([globex.status, globex.headers['idempotent-replayed'], json(globex)]).toEqual([
      201,
      undefined,
      { tenant: 'globex' },
    ]);
    // Each tenant's own retry is replayed.
    const again = await send(app.url, '/charges', {
      key,
      body: { amount: 1 },
      headers: { host: 'acme.tenants.example' },
    });
    expect([again.headers['idempotent-replayed'], json(again)]).toEqual([
      'true',
      { tenant: 'acme' },
    ]);
  });

  it('names every host of a router host list: two routers sharing their first host are two operations', async () => {
    const key = newKey();
    const b = await send(app.url, '/listed', { key, body: {}, headers: { host: 'b.example' } });
    expect(json(b)).toEqual({ router: 'shared.example,b.example' });
    const c = await send(app.url, '/listed', { key, body: {}, headers: { host: 'c.example' } });
    expect([c.status, c.headers['idempotent-replayed'], json(c)]).toEqual([
      201,
      undefined,
      { router: 'shared.example,c.example' },
    ]);
  });

  it('never starts a route past the lease runway since the acquisition: 503 and the key given back (lateStart)', async () => {
    await late.check(app.url, '/late');
  });
});
