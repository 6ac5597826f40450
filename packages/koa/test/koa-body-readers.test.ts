import { randomUUID } from 'node:crypto';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { listening, type RunningApp, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Koa, { type Context, type Next } from 'koa';
import { afterEach, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Body readers mounted before idem. One that keeps the bytes only on `ctx.request.rawBody`
// (not `ctx.req.rawBody`): those bytes are fingerprinted. One that is still reading the
// stream when idem runs (its 'data' listener attached, `next()` called before the end): the
// request is refused with BodyAlreadyReadError (500, nothing run, no key taken), never
// fingerprinted as an empty or partial body, never a stream read by two.

const apps: RunningApp[] = [];
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close();
});

type Reader = (ctx: Context, next: Next) => Promise<unknown>;

async function serve(reader: Reader) {
  const koa = new Koa();
  koa.silent = true;
  const errors: string[] = [];
  koa.on('error', (error: Error) => errors.push(error.name));
  koa.use(reader);
  koa.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  let runs = 0;
  const seen: string[] = [];
  koa.use(async (ctx) => {
    runs++;
    const raw = (ctx.request as { rawBody?: unknown }).rawBody;
    seen.push(Buffer.isBuffer(raw) ? raw.toString() : String(raw));
    ctx.status = 201;
    ctx.body = { runs };
  });
  const app = await listening(koa.listen(0, '127.0.0.1'));
  apps.push(app);
  return { app, runs: () => runs, seen, errors };
}

function collect(ctx: Context): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    ctx.req.on('data', (chunk: Buffer) => parts.push(chunk));
    ctx.req.on('end', () => resolve(Buffer.concat(parts)));
    ctx.req.on('error', reject);
  });
}

const post = (app: RunningApp, key: string, body: string, headers: Record<string, string> = {}) =>
  send(app.url, '/charges', {
    key,
    body: Buffer.from(body),
    headers: { 'content-type': 'application/octet-stream', ...headers },
  });

describe('koa: the bytes a reader kept on ctx.request.rawBody', () => {
  for (const kind of ['Buffer', 'string'] as const) {
    it(`a ${kind}: fingerprinted (a retry replays, another body is 422)`, async () => {
      const h = await serve(async (ctx, next) => {
        const bytes = await collect(ctx);
        (ctx.request as { rawBody?: unknown }).rawBody =
          kind === 'Buffer' ? bytes : bytes.toString();
        await next();
      });
      const key = randomUUID();
      const first = await post(h.app, key, 'amount=1');
      expect(first.status).toBe(201);
      const retry = await post(h.app, key, 'amount=1');
      expect(retry.status).toBe(201);
      expect(retry.headers['idempotent-replayed']).toBe('true');
      const other = await post(h.app, key, 'amount=2');
      expect(other.status).toBe(422);
      expect(h.runs()).toBe(1);
      expect(h.seen).toEqual(['amount=1']);
    });
  }

  it('nothing trustworthy there (an object, or nothing): still refused with BodyAlreadyReadError', async () => {
    const h = await serve(async (ctx, next) => {
      await collect(ctx);
      if (ctx.get('x-kind') === 'object')
        (ctx.request as { rawBody?: unknown }).rawBody = { amount: 1 };
      await next();
    });
    for (const kind of ['object', 'none']) {
      const answer = await post(h.app, randomUUID(), 'amount=1', { 'x-kind': kind });
      expect(answer.status).toBe(500);
    }
    expect(h.errors).toEqual(['BodyAlreadyReadError', 'BodyAlreadyReadError']);
    expect(h.runs()).toBe(0);
  });
});

describe('koa: a reader still reading the stream when idem runs', () => {
  it("a 'data' listener attached and next() called before the end: refused with BodyAlreadyReadError, nothing run", async () => {
    const readerGot: string[] = [];
    const h = await serve(async (ctx, next) => {
      void collect(ctx).then((bytes) => readerGot.push(bytes.toString()));
      await next();
    });
    const key = randomUUID();
    const first = await post(h.app, key, 'amount=1');
    expect(first.status).toBe(500);
    expect(h.errors).toEqual(['BodyAlreadyReadError']);
    expect(h.runs()).toBe(0);
    // The reader got the body whole (idem took none of it).
    expect(readerGot).toEqual(['amount=1']);
  });

  it('the body still on its way when idem asks for it: refused the same way, never read by two', async () => {
    // The reader's 'data' listener has had nothing yet when idem asks for the body (the client
    // sends the body only once idem is waiting for it, or has answered).
    let waiting: () => void = () => {};
    const idemWaits = new Promise<void>((resolve) => {
      waiting = resolve;
    });
    const readerGot: string[] = [];
    const h = await serve(async (ctx, next) => {
      ctx.req.on('newListener', (event) => {
        if (event === 'readable') waiting();
      });
      void collect(ctx).then((bytes) => readerGot.push(bytes.toString()));
      await next();
    });
    const url = new URL(h.app.url);
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest({
        host: url.hostname,
        port: url.port,
        method: 'POST',
        path: '/charges',
        headers: {
          'idempotency-key': `"${randomUUID()}"`,
          'content-type': 'application/octet-stream',
          'content-length': '8',
        },
      });
      const response = new Promise<IncomingMessage>((got) => req.on('response', got));
      req.on('error', reject);
      req.flushHeaders();
      void Promise.race([idemWaits, response]).then(() => req.end('amount=1'));
      void response.then((res) => {
        const parts: Buffer[] = [];
        res.on('data', (chunk: Buffer) => parts.push(chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString() }),
        );
      });
    });
    expect(answer.status).toBe(500);
    expect(h.errors).toEqual(['BodyAlreadyReadError']);
    expect(h.runs()).toBe(0);
  });

  it('a stream resumed (flowing) with no listener yet: refused the same way', async () => {
    const h = await serve(async (ctx, next) => {
      ctx.req.resume();
      await next();
    });
    const answer = await post(h.app, randomUUID(), 'amount=1');
    expect(answer.status).toBe(500);
    expect(h.errors).toEqual(['BodyAlreadyReadError']);
    expect(h.runs()).toBe(0);
  });

  it('a request without a body, its stream resumed by a reader: not refused', async () => {
    const h = await serve(async (ctx, next) => {
      ctx.req.on('data', () => {});
      await next();
    });
    const answer = await send(h.app.url, '/charges', { key: randomUUID() });
    expect(answer.status).toBe(201);
    expect(h.runs()).toBe(1);
  });

  it('a reader that read to the end before next() (the usual parser): not refused', async () => {
    const h = await serve(async (ctx, next) => {
      (ctx.request as { rawBody?: unknown }).rawBody = await collect(ctx);
      await next();
    });
    const answer = await post(h.app, randomUUID(), 'amount=1');
    expect(answer.status).toBe(201);
    expect(h.runs()).toBe(1);
  });
});
