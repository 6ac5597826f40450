import { randomUUID } from 'node:crypto';
import { json, listening, type RunningApp, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Router from '@koa/router';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

let runs = 0;
let app: RunningApp;

beforeAll(async () => {
  const koa = new Koa();
  koa.silent = true;
  // Upstream of the middleware: an envelope that rewrites the body after `await next()`.
  koa.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/enveloped') ctx.body = { data: ctx.body, wrapped: true };
  });
  koa.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  const router = new Router();
  router.post('/enveloped', (ctx) => {
    runs += 1;
    ctx.status = 201;
    ctx.body = { run: runs };
  });
  koa.use(router.routes());
  app = await listening(koa.listen(0, '127.0.0.1'));
});
afterAll(() => app.close());

describe('koa (review)', () => {
  it('a replay is the recorded response, not rewritten again by upstream middleware', async () => {
    const key = randomUUID();
    const first = await send(app.url, '/enveloped', { key, body: { a: 1 } });
    const firstBody = first.body.toString();
    expect(first.status).toBe(201);
    expect(JSON.parse(firstBody)).toEqual({ data: { run: 1 }, wrapped: true });
    const again = await send(app.url, '/enveloped', { key, body: { a: 1 } });
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body.toString()).toBe(firstBody);
    expect(runs).toBe(1);
  });
});
