import { randomUUID } from 'node:crypto';
import { type ClientHttp2Session, createSecureServer, connect as http2Connect } from 'node:http2';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { deflateSync } from 'node:zlib';
import { listening } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Koa, { type Context, type Next } from 'koa';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { selfSignedCertificate } from '../../../scripts/self-signed-certificate.js';
import { idempotency } from '../src/index.js';
import { h2FormPost } from './support/h2-post.js';

// edgerev22: adversarial review of the merge of wt/edges through real Koa apps on loopback:
// the tap's bytes as sent under a Content-Encoding label with a reader that keeps text and
// does not inflate; HTTP/2 over TLS (and HTTP/1.1 beside it, allowHTTP1) tapped.

type Reader = (ctx: Context, next: Next) => Promise<unknown>;
const closers: (() => Promise<void>)[] = [];
const sessions: ClientHttp2Session[] = [];
afterEach(() => {
  for (const session of sessions.splice(0)) session.destroy();
});
afterAll(async () => {
  for (const close of closers.splice(0)) await close();
});

/** Reads the stream whole; keeps the first 8 bytes as a Buffer (`x-kept: prefix`) or the text. */
const keeper: Reader = async (ctx, next) => {
  const chunks: Buffer[] = [];
  for await (const c of ctx.req) chunks.push(c as Buffer);
  const buf = Buffer.concat(chunks);
  const request = ctx.request as unknown as { rawBody: unknown };
  request.rawBody =
    ctx.get('x-kept') === 'prefix' ? Buffer.from(buf.subarray(0, 8)) : buf.toString();
  return next();
};

function app() {
  const koa = new Koa();
  koa.silent = true;
  koa.use(keeper);
  koa.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  let runs = 0;
  koa.use(async (ctx) => {
    runs++;
    ctx.status = 201;
    ctx.body = { runs, got: (ctx.request as unknown as { rawBody: unknown }).rawBody };
  });
  return { koa, runs: () => runs };
}

interface Reply {
  status: number;
  replayed: boolean;
}

describe('edgerev22 koa: text kept as it came under a coding label', () => {
  // FINDING LOW (fixed): a reader that keeps the body as text on ctx.request.rawBody without
  // inflating it (a webhook's raw reader): a zlib stream that is valid UTF-8, labelled
  // deflate, was fingerprinted inflated (`g7fc`), as `g7fc` sent plainly: the app got the 12
  // bytes of zlib the first time, `g7fc` the second, and the second was replayed the first
  // one's outcome.
  it('a zlib stream kept as text, and its inflated bytes sent plainly: two requests (422)', async () => {
    const { koa, runs } = app();
    const server = await listening(koa.listen(0, '127.0.0.1'));
    closers.push(server.close);
    const k = randomUUID();
    const post = (body: Buffer, headers: Record<string, string>) =>
      fetch(`${server.url}/charges`, {
        method: 'POST',
        headers: { 'idempotency-key': k, 'content-type': 'text/plain', ...headers },
        body: new Uint8Array(body),
      }).then(async (r) => ({
        status: r.status,
        replayed: r.headers.get('idempotent-replayed') === 'true',
        body: (await r.json()) as { got: string },
      }));
    const zlibbed = deflateSync('g7fc', { level: 1 });
    const first = await post(zlibbed, { 'content-encoding': 'deflate' });
    expect(first.status).toBe(201);
    expect(Buffer.from(first.body.got)).toEqual(zlibbed);
    const plain = await post(Buffer.from('g7fc'), {});
    // Observed: 201, replayed, the first one's { got: '\x78\x01K7OK…' }.
    expect([plain.status, plain.replayed]).toEqual([422, false]);
    expect(runs()).toBe(1);
  });
});

describe('edgerev22 koa: HTTP/2 over TLS', () => {
  const ONE = Buffer.from('to=alice&amount=1');
  const OTHER = Buffer.from('to=alice&amount=9999');

  async function secure() {
    const { koa, runs } = app();
    const server = createSecureServer(
      { ...selfSignedCertificate(), allowHTTP1: true },
      koa.callback(),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(
      () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
        }),
    );
    const port = (server.address() as AddressInfo).port;
    const client = http2Connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
    client.on('error', () => {});
    sessions.push(client);
    const h2 = (k: string, body: Buffer) => h2FormPost(client, k, body, { 'x-kept': 'prefix' });
    // HTTP/1.1 over TLS, chunked (no Content-Length to measure the prefix against).
    const h1 = (k: string, body: Buffer) =>
      new Promise<Reply>((resolve, reject) => {
        const req = httpsRequest(
          {
            host: '127.0.0.1',
            port,
            method: 'POST',
            path: '/charges',
            rejectUnauthorized: false,
            agent: false,
            headers: {
              'idempotency-key': k,
              'x-kept': 'prefix',
              'content-type': 'application/x-www-form-urlencoded',
              'transfer-encoding': 'chunked',
            },
          },
          (res) => {
            res.resume();
            res.on('end', () =>
              resolve({
                status: res.statusCode ?? 0,
                replayed: res.headers['idempotent-replayed'] !== undefined,
              }),
            );
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    return { h2, h1, runs };
  }

  it('held: a prefix kept, no content-length: HTTP/2 over TLS and HTTP/1.1 beside it (allowHTTP1) tell two bodies apart (422)', async () => {
    const s = await secure();
    for (const send of [s.h2, s.h1]) {
      const k = randomUUID();
      expect(await send(k, ONE)).toEqual({ status: 201, replayed: false });
      expect(await send(k, OTHER)).toEqual({ status: 422, replayed: false });
      expect(await send(k, ONE)).toEqual({ status: 201, replayed: true });
    }
    expect(s.runs()).toBe(2);
  });
});
