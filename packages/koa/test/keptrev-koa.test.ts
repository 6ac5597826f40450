import { randomUUID } from 'node:crypto';
import {
  type ClientHttp2Session,
  createServer as createHttp2Server,
  type Http2Server,
  connect as http2Connect,
} from 'node:http2';
import { type AddressInfo, connect } from 'node:net';
import { listening } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { bodyParser } from '@koa/bodyparser';
import Koa, { type Context, type Next } from 'koa';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { h2FormPost } from './support/h2-post.js';

// keptrev: attacks on ed8974d (Koa's ctx.request.rawBody bytes through keptBytesBody, checked
// against the Content-Length of an uncompressed body). Real Koa on loopback, with a reader
// that keeps the bytes as a Buffer (what `raw-body` keepers do) and with @koa/bodyparser
// (which keeps text). Requests are written on a raw socket so framing headers are exact.

type Reader = (ctx: Context, next: Next) => Promise<unknown>;
const FORM = 'Content-Type: application/x-www-form-urlencoded';
const ONE = Buffer.from('to=alice&amount=1');
const OTHER = Buffer.from('to=alice&amount=9999');
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

interface Reply {
  status: number;
  replayed: boolean;
  body: string;
}

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

/**
 * A reader before idem that reads the stream whole, keeps the bytes as a Buffer on
 * ctx.request.rawBody and parses the form; with `x-kept` it keeps something else there: the
 * first 8 bytes (`prefix`), a plain Uint8Array copy (`uint8`), a Proxy (`proxy`).
 */
const keeper: Reader = async (ctx, next) => {
  const chunks: Buffer[] = [];
  for await (const c of ctx.req) chunks.push(c as Buffer);
  const buf = Buffer.concat(chunks);
  const how = ctx.get('x-kept');
  let kept: unknown = buf;
  if (how === 'prefix') kept = Buffer.from(buf.subarray(0, 8));
  else if (how === 'uint8') kept = new Uint8Array(buf);
  else if (how === 'proxy') kept = new Proxy(buf, {});
  const request = ctx.request as unknown as { rawBody: unknown; body: unknown };
  request.rawBody = kept;
  request.body = Object.fromEntries(new URLSearchParams(buf.toString()));
  return next();
};

async function serve(reader: Reader) {
  const koa = new Koa();
  koa.silent = true;
  const errors: Error[] = [];
  koa.on('error', (error: Error) => errors.push(error));
  koa.use(reader);
  koa.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  let runs = 0;
  koa.use(async (ctx) => {
    runs++;
    ctx.status = 201;
    ctx.body = { runs, body: (ctx.request as { body?: unknown }).body ?? null };
  });
  const app = await listening(koa.listen(0, '127.0.0.1'));
  closers.push(() => app.close());
  const port = Number(new URL(app.url).port);
  const send = (lines: string[], body: Buffer = Buffer.alloc(0)): Promise<Reply> =>
    new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      const chunks: Buffer[] = [];
      socket.setTimeout(5000, () => socket.destroy(new Error('timed out')));
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('error', reject);
      socket.on('close', () => {
        const all = Buffer.concat(chunks);
        const split = all.indexOf('\r\n\r\n');
        const head = all.subarray(0, split < 0 ? all.length : split).toString('latin1');
        resolve({
          status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0),
          replayed: /\r\nidempotent-replayed:/i.test(head),
          body: split < 0 ? '' : all.subarray(split + 4).toString(),
        });
      });
      socket.write(
        Buffer.concat([
          Buffer.from(
            `POST /charges HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${lines.map((l) => `${l}\r\n`).join('')}\r\n`,
            'latin1',
          ),
          body,
        ]),
      );
    });
  return { send, errors, runs: () => runs };
}

type Served = Awaited<ReturnType<typeof serve>>;
const key = () => `Idempotency-Key: ${randomUUID()}`;
const length = (body: Buffer) => `Content-Length: ${body.length}`;
const chunk = (body: Buffer) =>
  Buffer.concat([
    Buffer.from(`${body.length.toString(16)}\r\n`),
    body,
    Buffer.from('\r\n0\r\n\r\n'),
  ]);

async function expectTold(h: Served, one: [string[], Buffer], two: [string[], Buffer]) {
  const k = key();
  const first = await h.send([k, ...one[0]], one[1]);
  expect(first.status).toBe(201);
  const other = await h.send([k, ...two[0]], two[1]);
  expect([other.status, other.replayed]).toEqual([422, false]);
  expect(h.runs()).toBe(1);
}

describe('keptrev koa: a Buffer kept on ctx.request.rawBody', () => {
  it('held: a prefix kept with a Content-Length (also 017, identity, IDENTITY) is refused, nothing run', async () => {
    const h = await serve(keeper);
    for (const lines of [
      [length(ONE)],
      ['Content-Length: 017'],
      [length(ONE), 'Content-Encoding: identity'],
      [length(ONE), 'Content-Encoding: IDENTITY'],
    ]) {
      const r = await h.send([key(), FORM, 'x-kept: prefix', ...lines], ONE);
      expect(r.status).toBe(500);
    }
    expect(h.errors.map((e) => e.name)).toEqual(Array(4).fill('BodyAlreadyReadError'));
    expect(h.errors[0]?.message).toMatch(/kept as ctx\.request\.rawBody are 8 where 17 were sent/);
    expect(h.runs()).toBe(0);
  });

  // FINDING (LOW, fixed: an empty Content-Encoding is identity): an empty Content-Encoding turns the check off for a body that is not
  // compressed (declaredLength measures only a missing or literal `identity` encoding; Koa's
  // own readers, co-body/inflation, read `'' || 'identity'` as identity). With a reader that
  // keeps a prefix, "to=alice&amount=1" and "to=alice&amount=9999" under one key and
  // `Content-Encoding:` (empty) are one request: the second is replayed the first's 201.
  // Fix: an empty Content-Encoding is identity in declaredLength.
  it('Content-Encoding: (empty), a prefix kept: refused or told apart', async () => {
    const h = await serve(keeper);
    // Refused now, as without the header: both 500 under one key, nothing run or replayed.
    const k = key();
    for (const body of [ONE, OTHER]) {
      const r = await h.send([k, FORM, 'x-kept: prefix', length(body), 'Content-Encoding:'], body);
      expect([r.status, r.replayed]).toEqual([500, false]);
    }
    expect(h.runs()).toBe(0);
  });

  // Was FINDING (LOW), fixed (the tapped bytes, taken as sent when they do not inflate): a reader that does not inflate (a raw-body keeper on ctx.req; Fastify
  // does the same) keeps exactly the Content-Length's bytes whatever Content-Encoding says,
  // yet any label but identity switches the check off: a client that labels a plain form
  // `Content-Encoding: gzip` gets the prefix-kept pair replayed (201) instead of 422. The
  // "a compressed count is not the inflated bytes'" reasoning holds only where a parser
  // inflated. Fix: idem cannot see whether the keeper inflated; at least list it with the
  // compressed gap (a label is enough, no compression needed), and tell keepers to inflate
  // or refuse encodings they do not decode.
  it('Content-Encoding: gzip on a plain form the reader keeps as is: a prefix refused or told apart', async () => {
    const h = await serve(keeper);
    await expectTold(
      h,
      [[FORM, 'x-kept: prefix', length(ONE), 'Content-Encoding: gzip'], ONE],
      [[FORM, 'x-kept: prefix', length(OTHER), 'Content-Encoding: gzip'], OTHER],
    );
  });

  // Was documented as left open, fixed: chunked kept bytes are not measured; the tapped bytes
  // are fingerprinted in their place.
  it('(documented gap) chunked: a prefix kept: refused or told apart', async () => {
    const h = await serve(keeper);
    await expectTold(
      h,
      [[FORM, 'x-kept: prefix', 'Transfer-Encoding: chunked'], chunk(ONE)],
      [[FORM, 'x-kept: prefix', 'Transfer-Encoding: chunked'], chunk(OTHER)],
    );
  });

  it('held: a plain Uint8Array copy is the body: runs, 422s another', async () => {
    const h = await serve(keeper);
    await expectTold(
      h,
      [[FORM, 'x-kept: uint8', length(ONE)], ONE],
      [[FORM, 'x-kept: uint8', length(OTHER)], OTHER],
    );
  });

  it('held: a Proxy of the Buffer kept: a 500, nothing run, no crash', async () => {
    const h = await serve(keeper);
    const r = await h.send([key(), FORM, 'x-kept: proxy', length(ONE)], ONE);
    expect(r.status).toBe(500);
    expect(h.runs()).toBe(0);
  });

  it('held: a refused request keeps no key: the correct retry runs once, then replays, 422s another', async () => {
    const h = await serve(keeper);
    const k = key();
    for (let i = 0; i < 2; i++) {
      const refused = await h.send([k, FORM, 'x-kept: prefix', length(ONE)], ONE);
      expect(refused.status).toBe(500);
    }
    expect(h.runs()).toBe(0);
    const retry = await h.send([k, FORM, length(ONE)], ONE);
    expect([retry.status, retry.replayed]).toEqual([201, false]);
    const replay = await h.send([k, FORM, length(ONE)], ONE);
    expect([replay.status, replay.replayed]).toEqual([201, true]);
    const other = await h.send([k, FORM, length(OTHER)], OTHER);
    expect([other.status, other.replayed]).toEqual([422, false]);
    expect(h.runs()).toBe(1);
  });

  it('held: 5 MB kept under chunked is 413 within 2 s, nothing run', async () => {
    const h = await serve(keeper);
    const started = Date.now();
    const r = await h.send(
      [key(), 'Content-Type: application/octet-stream', 'Transfer-Encoding: chunked'],
      chunk(Buffer.alloc(5 * 1024 * 1024, 0x61)),
    );
    expect(r.status).toBe(413);
    expect(r.body.length).toBeLessThan(2000);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(h.runs()).toBe(0);
  });
});

describe('keptrev koa: @koa/bodyparser (text kept)', () => {
  it('held: a leading BOM with a Content-Length (and Content-Encoding: identity) is refused', async () => {
    const h = await serve(bodyParser() as unknown as Reader);
    const body = Buffer.concat([BOM, Buffer.from('a=1')]);
    for (const lines of [[length(body)], [length(body), 'Content-Encoding: identity']]) {
      const r = await h.send([key(), FORM, ...lines], body);
      expect(r.status).toBe(500);
    }
    expect(h.runs()).toBe(0);
  });

  // FINDING (LOW, fixed as above): the empty Content-Encoding also switches off checkTextLength, so the
  // formrev2 BOM guard is gone for a body co-body reads as identity: "\uFEFFa=1" and "a=1"
  // (each with its Content-Length) under one key: the second is replayed instead of 422.
  it('Content-Encoding: (empty), a leading BOM and none: refused or told apart', async () => {
    const h = await serve(bodyParser() as unknown as Reader);
    const bommed = Buffer.concat([BOM, Buffer.from('a=1')]);
    const plain = Buffer.from('a=1');
    // The stripped BOM is seen again: refused (nothing run), the plain body then runs under
    // the same key, and the BOM body is refused again, never replayed the plain one's answer.
    const k = key();
    const lines = (body: Buffer) => [k, FORM, length(body), 'Content-Encoding:'];
    expect((await h.send(lines(bommed), bommed)).status).toBe(500);
    expect((await h.send(lines(plain), plain)).status).toBe(201);
    const again = await h.send(lines(bommed), bommed);
    expect([again.status, again.replayed]).toEqual([500, false]);
    expect(h.runs()).toBe(1);
  });

  it('held: Content-Encoding: IDENTITY is refused by inflation (415), nothing run', async () => {
    const h = await serve(bodyParser() as unknown as Reader);
    const r = await h.send([key(), FORM, length(ONE), 'Content-Encoding: IDENTITY'], ONE);
    expect(r.status).toBe(415);
    expect(h.runs()).toBe(0);
  });
});

describe('keptrev koa: HTTP/2 (no Content-Length: the frames count the body)', () => {
  const servers: Http2Server[] = [];
  const sessions: ClientHttp2Session[] = [];
  afterAll(async () => {
    for (const session of sessions) session.destroy();
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  });

  /** What the tap of the request's stream holds when the route runs. */
  function streamTapOf(ctx: Context): { tapped: boolean; kept: number } {
    const stream = (ctx.req as unknown as { stream: Record<symbol, { parts?: Buffer[] }> }).stream;
    const tap = stream[Symbol.for('idem.requestBodyTap')];
    let kept = 0;
    for (const part of tap?.parts ?? []) kept += part.length;
    return { tapped: tap !== undefined, kept };
  }

  async function h2(reader: Reader | undefined = keeper) {
    const app = new Koa();
    app.silent = true;
    if (reader) app.use(reader);
    app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
    let runs = 0;
    let tap = { tapped: false, kept: -1 };
    app.use(async (ctx) => {
      runs++;
      tap = streamTapOf(ctx);
      ctx.status = 201;
      ctx.body = { runs };
    });
    const server = createHttp2Server(app.callback());
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = http2Connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    client.on('error', () => {});
    sessions.push(client);
    const post = (k: string, body: Buffer, extra: Record<string, string> = {}) =>
      h2FormPost(client, k, body, extra);
    return { post, runs: () => runs, tap: () => tap };
  }

  it('held: with a content-length, a prefix kept is refused', async () => {
    const h = await h2();
    const r = await h.post(randomUUID(), ONE, {
      'x-kept': 'prefix',
      'content-length': String(ONE.length),
    });
    expect(r.status).toBe(500);
    expect(h.runs()).toBe(0);
  });

  // Was FINDING (LOW), fixed (HTTP/2 requests are tapped now: Node 20 has no diagnostics
  // channel for them, but `net.server.socket` names the server of each connection, and an
  // HTTP/2 one gets a `stream` listener put before its compatibility layer's): HTTP/2 requests
  // usually carry no content-length (the DATA frames carry the body), so the check never runs
  // there: a prefix-keeping reader made two bodies one request (the second replayed). The
  // bytes of the stream are fingerprinted in place of the prefix now, as for chunked HTTP/1.
  it('no content-length (HTTP/2 framing), a prefix kept: refused or told apart', async () => {
    const h = await h2();
    const k = randomUUID();
    const first = await h.post(k, ONE, { 'x-kept': 'prefix' });
    expect(first.status).toBe(201);
    const other = await h.post(k, OTHER, { 'x-kept': 'prefix' });
    expect([other.status, other.replayed]).toEqual([422, false]);
    // The same body with its prefix kept is the first one's replay.
    const same = await h.post(k, ONE, { 'x-kept': 'prefix' });
    expect([same.status, same.replayed]).toEqual([201, true]);
    expect(h.runs()).toBe(1);
  });

  it('HTTP/2, @koa/bodyparser before idem: a leading BOM it strips is told apart (no content-length to measure)', async () => {
    const h = await h2(bodyParser() as unknown as Reader);
    const k = randomUUID();
    const bommed = Buffer.concat([BOM, Buffer.from('a=1')]);
    expect((await h.post(k, Buffer.from('a=1'))).status).toBe(201);
    const other = await h.post(k, bommed);
    expect([other.status, other.replayed]).toEqual([422, false]);
    expect(h.runs()).toBe(1);
  });

  it('HTTP/2 with idem first: the stream is tapped until idem reads the body, then nothing is kept', async () => {
    const h = await h2(undefined);
    const k = randomUUID();
    const first = await h.post(k, ONE);
    expect(first.status).toBe(201);
    expect(h.tap()).toEqual({ tapped: true, kept: 0 });
    const other = await h.post(k, OTHER);
    expect([other.status, other.replayed]).toEqual([422, false]);
    expect((await h.post(k, ONE)).replayed).toBe(true);
  });
});
