/**
 * docaudit: README guarantees of @idem/koa that no earlier test would notice breaking (each
 * found by mutating the source and running the package's tests; see the commit message).
 */
import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { json, listening, type RunningApp, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Router from '@koa/router';
import Koa, { type Context } from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

let runs = 0;
let app: RunningApp;

beforeAll(async () => {
  const koa = new Koa();
  koa.silent = true;
  const guard = idempotency({
    store: createMemoryStore(),
    scope: 'global',
    onWarning: () => {},
  });
  const router = new Router();
  router.post('/charges/:id', guard, async (ctx) => {
    runs += 1;
    ctx.status = 201;
    ctx.body = { run: runs, id: ctx.params.id };
  });
  koa.use(router.routes());
  app = await listening(koa.listen(0, '127.0.0.1'));
});
afterAll(() => app.close());

describe('docaudit koa: the operation is the route @koa/router matched (README "How it fits Koa")', () => {
  // "The operation a key is unique within is the route: the one @koa/router matched
  // (ctx._matchedRoute) when mounted on a route." So one key sent to /charges/1 and then to
  // /charges/2 (one route, '/charges/:id') is one key used with another request: 422, the
  // handler not run again. Named after the request's path instead, each path would be an
  // operation of its own and the key would run the route twice.
  it('one key on two paths of one route: the second is refused with 422, not run', async () => {
    const key = randomUUID();
    const first = await send(app.url, '/charges/1', { key, body: { amount: 1 } });
    expect(first.status).toBe(201);
    const before = runs;
    const second = await send(app.url, '/charges/2', { key, body: { amount: 1 } });
    expect(second.status).toBe(422);
    expect(json(second)).toMatchObject({ type: expect.stringContaining('key-reused') });
    expect(runs).toBe(before);
    // The first path still replays.
    const replay = await send(app.url, '/charges/1', { key, body: { amount: 1 } });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(json(replay)).toEqual(json(first));
  });
});

describe('docaudit koa: maxBodyBytes bounds the text a reader before idem kept (README Options, Status codes)', () => {
  // "maxBodyBytes ... checked on Content-Length, then while reading"; 413 body-too-large for a
  // body above it, nothing stored. A reader mounted before idem that kept the body as a string
  // on ctx.request.rawBody, sent chunked (no Content-Length to check first): the kept text is
  // what idem fingerprints, so it is held to maxBodyBytes too; without that check a body of
  // any size was fingerprinted and the route ran.
  it('a chunked body kept as a string, past maxBodyBytes: 413 body-too-large, the route not run', async () => {
    const koa = new Koa();
    koa.silent = true;
    koa.use(async (ctx: Context, next) => {
      const parts: Buffer[] = [];
      for await (const chunk of ctx.req) parts.push(chunk as Buffer);
      (ctx.request as { rawBody?: unknown }).rawBody = Buffer.concat(parts).toString();
      await next();
    });
    koa.use(
      idempotency({
        store: createMemoryStore(),
        scope: 'global',
        maxBodyBytes: 16,
        onWarning: () => {},
      }),
    );
    let ran = 0;
    koa.use((ctx) => {
      ran++;
      ctx.status = 201;
      ctx.body = { ok: true };
    });
    const server = await listening(koa.listen(0, '127.0.0.1'));
    try {
      const url = new URL(server.url);
      const { status, type } = await new Promise<{ status: number; type: string }>(
        (resolve, reject) => {
          const req = httpRequest(
            {
              host: url.hostname,
              port: url.port,
              path: '/charges',
              method: 'POST',
              headers: {
                'idempotency-key': `"${randomUUID()}"`,
                'content-type': 'text/plain',
                'transfer-encoding': 'chunked',
              },
            },
            (res) => {
              const chunks: Buffer[] = [];
              res.on('data', (c: Buffer) => chunks.push(c));
              res.on('end', () => {
                const body = Buffer.concat(chunks).toString();
                resolve({ status: res.statusCode ?? 0, type: body });
              });
            },
          );
          req.on('error', reject);
          req.write('x'.repeat(32));
          req.end('y'.repeat(32));
        },
      );
      expect(status).toBe(413);
      expect(type).toContain('body-too-large');
      expect(ran).toBe(0);
    } finally {
      await server.close();
    }
  });
});
