import { connect } from 'node:net';
import { json, listening, type RunningApp, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Router from '@koa/router';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Attacks on today's change (a RegExp `host` router names `ctx.host` in the operation), wt/todayrev2.

let counter = 0;
const newKey = () => `todayrev2-${process.pid}-${Date.now()}-${++counter}`;

/** A raw HTTP exchange (no Host header, HTTP/1.0): the status code. */
function rawStatus(port: number, head: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.end(head));
    let text = '';
    socket.on('data', (d) => {
      text += d.toString('latin1');
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(Number(text.split(' ')[1])));
  });
}

describe('@idem/koa RegExp host attacks (todayrev2)', () => {
  let app: RunningApp;
  let proxied: RunningApp;
  const runs: string[] = [];
  beforeAll(async () => {
    const idem = idempotency({
      store: createMemoryStore(),
      scope: () => ({ principal: 'user-7' }),
      onWarning: () => {},
    });
    const mount = (koa: Koa, router: Router, path: string) => {
      router.post(path, idem, (ctx) => {
        runs.push(`${path} ${ctx.host}`);
        ctx.status = 201;
        ctx.body = { host: ctx.host, run: runs.length };
      });
      koa.use(router.routes());
    };
    const koa = new Koa();
    // Case-insensitive, an optional trailing dot and port, IPv6 literals, unanchored long names.
    mount(
      koa,
      new Router({ host: /^([a-z]+\.tenants\.example\.?|\[[0-9a-f:]+\])(:\d+)?$/i }),
      '/t',
    );
    mount(koa, new Router({ host: /\.long\.example$/ }), '/long');
    // A list mixing a string and a RegExp: @koa/router matches list entries by equality only.
    mount(
      koa,
      new Router({ host: ['listed.example', /^[a-z]+\.mixed\.example$/] as never }),
      '/mix',
    );
    mount(koa, new Router({ host: 'fixed.example' }), '/fixed');
    app = await listening(koa.listen(0, '127.0.0.1'));
    const behind = new Koa();
    behind.proxy = true;
    mount(behind, new Router({ host: /^[a-z]+\.tenants\.example$/ }), '/p');
    proxied = await listening(behind.listen(0, '127.0.0.1'));
  });
  afterAll(async () => {
    await app.close();
    await proxied.close();
  });

  const post = (base: string, path: string, key: string, headers: Record<string, string>) =>
    send(base, path, { key, body: { amount: 1 }, headers });

  it("replays a tenant's retry whose Host differs only in case", async () => {
    const key = newKey();
    const first = await post(app.url, '/t', key, { host: 'acme.tenants.example' });
    expect(first.status).toBe(201);
    const retry = await post(app.url, '/t', key, { host: 'ACME.Tenants.EXAMPLE' });
    expect([retry.headers['idempotent-replayed'], json(retry)]).toEqual(['true', json(first)]);
  });

  // FINDING LOW: a fully qualified host (trailing dot) is the same host, yet was another
  // operation: the same tenant's retry through `acme.tenants.example.` ran the route again.
  it("replays a tenant's retry whose Host carries the root's trailing dot (same host)", async () => {
    const key = newKey();
    const first = await post(app.url, '/t', key, { host: 'acme.tenants.example' });
    const retry = await post(app.url, '/t', key, { host: 'acme.tenants.example.' });
    expect([retry.headers['idempotent-replayed'], json(retry)]).toEqual(['true', json(first)]);
    const ported = await post(app.url, '/t', key, { host: 'acme.tenants.example.:8443' });
    const portedFirst = await post(app.url, '/t', key, { host: 'acme.tenants.example:8443' });
    expect(json(portedFirst)).toEqual(json(ported));
  });

  it('keeps two tenants apart whatever the case, dot or port, and IPv6 literals apart from names', async () => {
    const key = newKey();
    const hosts = ['acme.tenants.example', 'globex.tenants.example:80', '[::1]:3000', '[::2]'];
    const answers = [];
    for (const host of hosts) answers.push(json(await post(app.url, '/t', key, { host })));
    expect(new Set(answers.map((a) => JSON.stringify(a))).size).toBe(hosts.length);
    expect(answers.map((a) => (a as { host: string }).host)).toEqual(hosts);
  });

  it('names the forwarded host behind a proxy (app.proxy), the one the router matched', async () => {
    const key = newKey();
    const acme = await post(proxied.url, '/p', key, {
      host: 'ingress.internal',
      'x-forwarded-host': 'acme.tenants.example',
    });
    expect([acme.status, json(acme)]).toMatchObject([201, { host: 'acme.tenants.example' }]);
    const globex = await post(proxied.url, '/p', key, {
      host: 'ingress.internal',
      'x-forwarded-host': 'globex.tenants.example',
    });
    expect([globex.headers['idempotent-replayed'], json(globex)]).toMatchObject([
      undefined,
      { host: 'globex.tenants.example' },
    ]);
    const retry = await post(proxied.url, '/p', key, {
      host: 'other-ingress.internal',
      'x-forwarded-host': 'acme.tenants.example',
    });
    expect([retry.headers['idempotent-replayed'], json(retry)]).toEqual(['true', json(acme)]);
  });

  it('a list mixing strings and a RegExp serves only its strings (no tenant shares the route)', async () => {
    const key = newKey();
    const listed = await post(app.url, '/mix', key, { host: 'listed.example' });
    expect(listed.status).toBe(201);
    const tenant = await post(app.url, '/mix', key, { host: 'acme.mixed.example' });
    expect(tenant.status).toBe(404);
  });

  it('a string host is named as before: no hostname, a retry replays', async () => {
    const key = newKey();
    const first = await post(app.url, '/fixed', key, { host: 'fixed.example' });
    const retry = await post(app.url, '/fixed', key, { host: 'fixed.example' });
    expect([first.status, retry.headers['idempotent-replayed']]).toEqual([201, 'true']);
  });

  it('an HTTP/1.0 request without a Host never reaches a RegExp host route (no run, no 500)', async () => {
    const port = Number(new URL(app.url).port);
    const before = runs.length;
    const status = await rawStatus(
      port,
      'POST /t HTTP/1.0\r\nIdempotency-Key: "nohost"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}',
    );
    expect(status).toBe(404);
    expect(runs.length).toBe(before);
  });

  it('a very long Host is bounded: the server refuses it or answers, never a 500, and each tenant stays apart', async () => {
    const key = newKey();
    const long = `${'a'.repeat(8_000)}.long.example`;
    const first = await post(app.url, '/long', key, { host: long });
    expect([201, 400, 413, 431]).toContain(first.status);
    const huge = await post(app.url, '/long', key, { host: `${'b'.repeat(20_000)}.long.example` });
    expect([400, 413, 431]).toContain(huge.status);
    const other = await post(app.url, '/long', key, { host: 'short.long.example' });
    expect([other.status, other.headers['idempotent-replayed']]).toEqual([201, undefined]);
  });
});
