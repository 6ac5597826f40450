import { randomUUID } from 'node:crypto';
import { listening, type RunningApp, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Router from '@koa/router';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

let runs = 0;
let app: RunningApp;
const warnings: string[] = [];
/** ctx.status as upstream middleware saw it after `await next()`. */
const statuses: number[] = [];
/** What Koa's response carries when the middleware runs (on-finished's watch). */
let watchSeen: unknown;

beforeAll(async () => {
  const koa = new Koa();
  koa.silent = true;
  // Upstream of the middleware: an envelope that rewrites the body after `await next()`.
  koa.use(async (ctx, next) => {
    await next();
    statuses.push(ctx.status);
    if (ctx.path === '/enveloped') ctx.body = { data: ctx.body, wrapped: true };
  });
  koa.use(async (ctx, next) => {
    const res = ctx.res as { __onFinished?: { queue?: unknown } };
    watchSeen = { type: typeof res.__onFinished, queue: Array.isArray(res.__onFinished?.queue) };
    // As if on-finished kept its watch elsewhere.
    if (ctx.path === '/unwatched') delete res.__onFinished;
    await next();
  });
  koa.use(
    idempotency({
      store: createMemoryStore(),
      scope: 'global',
      onWarning: (message) => warnings.push(message),
    }),
  );
  const router = new Router();
  router.post('/enveloped', (ctx) => {
    runs += 1;
    ctx.status = 201;
    ctx.body = { run: runs };
  });
  router.post('/multipart', (ctx) => {
    ctx.status = 201;
    ctx.body = { ok: true };
  });
  router.post('/unwatched', (ctx) => {
    ctx.status = 201;
    ctx.body = { ok: true };
  });
  koa.use(router.routes());
  app = await listening(koa.listen(0, '127.0.0.1'));
});
afterAll(() => app.close());

describe('koa (review)', () => {
  it('a replay is the recorded response, not rewritten again by upstream middleware', async () => {
    const key = randomUUID();
    statuses.length = 0;
    const first = await send(app.url, '/enveloped', { key, body: { a: 1 } });
    const firstBody = first.body.toString();
    expect(first.status).toBe(201);
    expect(JSON.parse(firstBody)).toEqual({ data: { run: 1 }, wrapped: true });
    const again = await send(app.url, '/enveloped', { key, body: { a: 1 } });
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body.toString()).toBe(firstBody);
    expect(runs).toBe(1);
    // Upstream loggers see the status that went out, not Koa's default 404.
    expect(statuses).toEqual([201, 201]);
  });

  it("finds on-finished's watch where the middleware detaches it (a Koa upgrade that moves it fails here)", async () => {
    await send(app.url, '/enveloped', { key: randomUUID(), body: {} });
    expect(watchSeen).toEqual({ type: 'function', queue: true });
    expect(warnings).toEqual([]);
  });

  it('says so (once) when the watch is not there, rather than losing the guarantee silently', async () => {
    for (let i = 0; i < 2; i++) {
      const sent = await send(app.url, '/unwatched', { key: randomUUID(), body: {} });
      expect(sent.status).toBe(201);
    }
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/on-finished/);
  });

  // Clients draw a new boundary each time they encode a form (fetch with FormData): the
  // fingerprint reads a multipart body's parts, not its boundary (@idem/http, multipart.ts).
  it('replays the retry of a multipart form sent with another boundary', async () => {
    const key = randomUUID();
    const form = (boundary: string, value = '1') =>
      send(app.url, '/multipart', {
        key,
        body: Buffer.from(
          `--${boundary}\r\ncontent-disposition: form-data; name="a"\r\n\r\n${value}\r\n--${boundary}--\r\n`,
        ),
        headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
      });
    expect((await form('one')).status).toBe(201);
    const retry = await form('two');
    expect(retry.status).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect((await form('three', '2')).status).toBe(422);
  });
});
