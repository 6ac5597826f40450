import { randomUUID } from 'node:crypto';
import { json, listening, type RunningApp, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { bodyParser } from '@koa/bodyparser';
import Router from '@koa/router';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getIdempotency, idempotency } from '../src/index.js';

let runs = 0;
let app: RunningApp;

beforeAll(async () => {
  const koa = new Koa();
  koa.silent = true;
  // After the body parser, and on routes of the router rather than with app.use.
  koa.use(bodyParser());
  const guard = idempotency({
    store: createMemoryStore(),
    scope: (ctx) => ({ principal: ctx.get('x-tenant') || undefined }) as never,
    onWarning: () => {},
  });
  const router = new Router();
  const handler = async (ctx: Koa.Context) => {
    runs += 1;
    const bytes = ctx.is('application/octet-stream') ? await bytesOf(ctx.req) : undefined;
    ctx.status = 201;
    ctx.body = {
      run: runs,
      size: bytes?.length ?? null,
      body: bytes ? null : (ctx.request.body ?? null),
      operation: getIdempotency(ctx) ? ctx._matchedRoute : null,
    };
  };
  router.post('/uploads/:id', guard, handler);
  router.post('/other/:id', guard, handler);
  koa.use(router.routes());
  app = await listening(koa.listen(0, '127.0.0.1'));
});
afterAll(() => app.close());

async function bytesOf(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

const upload = (path: string, key: string, bytes: Buffer) =>
  send(app.url, path, {
    key,
    body: bytes,
    headers: { 'content-type': 'application/octet-stream' },
  });

describe('mounted after @koa/bodyparser, on router routes', () => {
  it('fingerprints a body the parser leaves unread by its bytes: another body gets 422', async () => {
    const key = randomUUID();
    const first = await upload('/uploads/1', key, Buffer.from([1, 2, 3]));
    expect(first.status).toBe(201);
    // The route still reads the bytes the middleware put back.
    expect((json(first) as { size: number }).size).toBe(3);
    const replay = await upload('/uploads/1', key, Buffer.from([1, 2, 3]));
    expect(replay.headers['idempotent-replayed']).toBe('true');
    const other = await upload('/uploads/1', key, Buffer.from([9, 9, 9]));
    expect(other.status).toBe(422);
  });

  it('uses what the parser made of a JSON body, and names the operation after the matched route', async () => {
    const key = randomUUID();
    const first = await send(app.url, '/uploads/2', { key, body: { a: 1, b: 2 } });
    expect(json(first)).toMatchObject({ body: { a: 1, b: 2 }, operation: '/uploads/:id' });
    // The same JSON spelt another way is the same request.
    const respelt = await send(app.url, '/uploads/2', {
      key,
      body: Buffer.from('{ "b": 2, "a": 1 }'),
      headers: { 'content-type': 'application/json' },
    });
    expect(respelt.headers['idempotent-replayed']).toBe('true');
    // Another route, another operation: the same key runs there.
    const elsewhere = await send(app.url, '/other/2', { key, body: { a: 1, b: 2 } });
    expect(elsewhere.headers['idempotent-replayed']).toBeUndefined();
    expect(elsewhere.status).toBe(201);
  });
});
