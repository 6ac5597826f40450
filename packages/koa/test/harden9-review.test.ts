import { randomUUID } from 'node:crypto';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import {
  type ClientHttp2Session,
  createServer as createH2Server,
  connect as http2Connect,
  type IncomingHttpHeaders,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import { listening, type RunningApp, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { bodyParser } from '@koa/bodyparser';
import Koa, { type Context, type Next } from 'koa';
import { afterEach, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Adversarial review of the Koa body readers of wt/harden9: the bytes kept on
// ctx.request.rawBody, the refusal of a reader still reading when idem runs, ordinary body
// parsers (over HTTP/1.1 and HTTP/2) that must not be refused.

const closers: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

type Reader = (ctx: Context, next: Next) => Promise<unknown>;

function app(readers: Reader[]) {
  const koa = new Koa();
  koa.silent = true;
  const errors: string[] = [];
  koa.on('error', (error: Error) => errors.push(error.name));
  for (const reader of readers) koa.use(reader);
  koa.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  let runs = 0;
  const seen: string[] = [];
  koa.use(async (ctx) => {
    runs++;
    const request = ctx.request as { rawBody?: unknown; body?: unknown };
    seen.push(
      request.body !== undefined ? JSON.stringify(request.body) : String(request.rawBody ?? ''),
    );
    ctx.status = 201;
    ctx.body = { runs };
  });
  return { koa, errors, seen, runs: () => runs };
}

async function serve(readers: Reader[]) {
  const made = app(readers);
  const running = await listening(made.koa.listen(0, '127.0.0.1'));
  closers.push(() => running.close());
  return { ...made, app: running };
}

/** The whole body, as raw-body's `getRawBody(req)` reads it (a Buffer, or a string when `encoding` is given). */
function getRawBody(req: IncomingMessage, options: { encoding?: BufferEncoding } = {}) {
  return new Promise<Buffer | string>((resolve, reject) => {
    const parts: Buffer[] = [];
    req.on('data', (chunk: Buffer) => parts.push(chunk));
    req.on('end', () => {
      const bytes = Buffer.concat(parts);
      resolve(options.encoding ? bytes.toString(options.encoding) : bytes);
    });
    req.on('error', reject);
  });
}

const postBytes = (running: RunningApp, key: string, body: Buffer, type = 'text/plain') =>
  send(running.url, '/charges', { key, body, headers: { 'content-type': type } });

describe('koa review: ctx.request.rawBody as a string', () => {
  it(// FINDING (MEDIUM, isolation; fixed on this branch): a string rawBody was taken as its
  // UTF-8 encoding. A reader that decoded the bytes as UTF-8 (raw-body/co-body with
  // `encoding: 'utf8'`, co-body's default) maps every invalid sequence to U+FFFD: two
  // different bodies gave the same string, the same fingerprint, and the second was
  // replayed the first's outcome instead of a 422. Text with a U+FFFD is no longer trusted
  // (BodyAlreadyReadError, nothing run), as `req.rawBody` text in @idem/http.
  'two different non-UTF-8 bodies kept as a decoded string are never replayed one for the other', async () => {
    const h = await serve([
      async (ctx, next) => {
        (ctx.request as { rawBody?: unknown }).rawBody = await getRawBody(ctx.req, {
          encoding: 'utf8',
        });
        await next();
      },
    ]);
    const key = randomUUID();
    const first = await postBytes(h.app, key, Buffer.from([0xff, 0x61]), 'application/x-bin');
    const other = await postBytes(h.app, key, Buffer.from([0xfe, 0x61]), 'application/x-bin');
    expect(other.headers['idempotent-replayed']).toBeUndefined();
    expect([first.status, other.status]).toEqual([500, 500]);
    expect(h.errors).toEqual(['BodyAlreadyReadError', 'BodyAlreadyReadError']);
    expect(h.runs()).toBe(0);
    // Valid UTF-8 text is still fingerprinted.
    const text = randomUUID();
    expect((await postBytes(h.app, text, Buffer.from('caf\u00e9'))).status).toBe(201);
    expect(
      (await postBytes(h.app, text, Buffer.from('caf\u00e9'))).headers['idempotent-replayed'],
    ).toBe('true');
    expect((await postBytes(h.app, text, Buffer.from('cafe'))).status).toBe(422);
  });

  it('a string kept as latin1 text (lossless) tells two bodies apart', async () => {
    const h = await serve([
      async (ctx, next) => {
        (ctx.request as { rawBody?: unknown }).rawBody = await getRawBody(ctx.req, {
          encoding: 'latin1',
        });
        await next();
      },
    ]);
    const key = randomUUID();
    expect((await postBytes(h.app, key, Buffer.from([0xff, 0x61]))).status).toBe(201);
    const retry = await postBytes(h.app, key, Buffer.from([0xff, 0x61]));
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect((await postBytes(h.app, key, Buffer.from([0xfe, 0x61]))).status).toBe(422);
    expect(h.runs()).toBe(1);
  });

  it('a Buffer rawBody and the stream read by idem give the same decision for the same JSON', async () => {
    // Two apps, same store: not needed; within one app the JSON is canonicalized (key order).
    const h = await serve([
      async (ctx, next) => {
        (ctx.request as { rawBody?: unknown }).rawBody = await getRawBody(ctx.req);
        await next();
      },
    ]);
    const key = randomUUID();
    const json = (text: string) => postBytes(h.app, key, Buffer.from(text), 'application/json');
    expect((await json('{"a":1,"b":2}')).status).toBe(201);
    const reordered = await json('{ "b": 2, "a": 1 }');
    expect(reordered.headers['idempotent-replayed']).toBe('true');
    expect((await json('{"a":1,"b":3}')).status).toBe(422);
    expect(h.runs()).toBe(1);
  });
});

/**
 * Posts `body` with its head first, and the body once `armed`'s callback is called (idem is
 * reading: the second 'readable' listener) or an answer came.
 */
function iteratorPost(
  running: RunningApp,
  key: string,
  body: string,
  armed: (go: () => void) => void,
): Promise<{ status: number; replayed: string | undefined }> {
  const url = new URL(running.url);
  return new Promise((resolve, reject) => {
    let go: () => void = () => {};
    const waiting = new Promise<void>((resolve) => {
      go = resolve;
    });
    armed(go);
    const req = httpRequest({
      host: url.hostname,
      port: url.port,
      method: 'POST',
      path: '/charges',
      headers: {
        'idempotency-key': `"${key}"`,
        'content-type': 'application/octet-stream',
        'content-length': String(Buffer.byteLength(body)),
      },
    });
    const response = new Promise<IncomingMessage>((got) => req.on('response', got));
    req.on('error', reject);
    req.flushHeaders();
    void Promise.race([waiting, response]).then(() => req.end(body));
    void response.then((res) => {
      res.resume();
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          replayed: res.headers['idempotent-replayed'] as string | undefined,
        }),
      );
    });
  });
}

describe('koa review: a reader still reading when idem runs', () => {
  it(// Attack: a reader with `for await (const chunk of ctx.req)` (a 'readable' listener, not
  // 'data': the stream is not flowing) calls next() before the end, so it is not refused.
  // Held: idem's peek reads and puts the bytes back, the reader still gets them whole, and a
  // second body under the key is told apart (422), never replayed.
  'an async-iterator reader (for await) in flight: its body is told apart and the reader gets it whole', async () => {
    let idemWaits: () => void = () => {};
    const readerGot: string[] = [];
    const h = await serve([
      async (ctx, next) => {
        let readable = 0;
        ctx.req.on('newListener', (event) => {
          if (event === 'readable' && ++readable === 2) idemWaits();
        });
        void (async () => {
          const parts: Buffer[] = [];
          for await (const chunk of ctx.req) parts.push(chunk as Buffer);
          readerGot.push(Buffer.concat(parts).toString());
        })();
        await next();
      },
    ]);
    const key = randomUUID();
    const first = await iteratorPost(h.app, key, 'amount=1', (go) => {
      idemWaits = go;
    });
    const second = await iteratorPost(h.app, key, 'amount=2', (go) => {
      idemWaits = go;
    });
    expect(readerGot).toEqual(['amount=1', 'amount=2']);
    // Refused (500), or the second body told apart from the first (422): never a replay.
    expect(second.replayed).toBeUndefined();
    expect([201, 500]).toContain(first.status);
    expect([422, 500]).toContain(second.status);
    expect(h.runs()).toBeLessThanOrEqual(1);
  });

  it("a logger counting bytes with a 'data' listener, mounted before idem: refused (mount it after)", async () => {
    // Not a hole but a refusal of a setup that reads nothing for itself: documented here.
    let counted = 0;
    const h = await serve([
      async (ctx, next) => {
        ctx.req.on('data', (chunk: Buffer) => {
          counted += chunk.length;
        });
        await next();
      },
    ]);
    const answer = await postBytes(h.app, randomUUID(), Buffer.from('amount=1'));
    expect(answer.status).toBe(500);
    expect(h.errors).toEqual(['BodyAlreadyReadError']);
    expect(h.runs()).toBe(0);
    expect(counted).toBe(8);
  });
});

describe('koa review: @koa/bodyparser (rawBody kept) before idem', () => {
  it('JSON: a retry replays, a reordered body replays, another body is 422, the handler ran once', async () => {
    const h = await serve([bodyParser() as unknown as Reader]);
    const key = randomUUID();
    const json = (text: string) => postBytes(h.app, key, Buffer.from(text), 'application/json');
    expect((await json('{"amount":1,"to":"x"}')).status).toBe(201);
    const reordered = await json('{"to":"x","amount":1}');
    expect(reordered.status).toBe(201);
    expect(reordered.headers['idempotent-replayed']).toBe('true');
    expect((await json('{"amount":2,"to":"x"}')).status).toBe(422);
    expect(h.runs()).toBe(1);
  });

  it(// FINDING (MEDIUM, isolation; fixed): a text parser (@koa/bodyparser with enableTypes
  // text; express.text() likewise) decodes as UTF-8 and sets the parsed body to a string
  // with U+FFFD for every invalid sequence: the parsed-body path fingerprinted that text, so
  // two different bodies under one key were replayed one for the other. Decoded text (or a
  // JSON parser's strings) holding U+FFFD is now refused as a body idem can no longer see.
  'text parsed with invalid UTF-8: refused (BodyAlreadyReadError, nothing run), never replayed one for the other', async () => {
    const h = await serve([bodyParser({ enableTypes: ['text'] }) as unknown as Reader]);
    const key = randomUUID();
    const first = await postBytes(h.app, key, Buffer.from([0xff, 0x61]), 'text/plain');
    const other = await postBytes(h.app, key, Buffer.from([0xfe, 0x61]), 'text/plain');
    expect([first.status, other.status]).toEqual([500, 500]);
    expect(other.headers['idempotent-replayed']).toBeUndefined();
    expect(h.errors).toEqual(['BodyAlreadyReadError', 'BodyAlreadyReadError']);
    expect(h.runs()).toBe(0);
    // Valid UTF-8 text through the same parser is fingerprinted as before.
    const valid = randomUUID();
    expect((await postBytes(h.app, valid, Buffer.from('é1'), 'text/plain')).status).toBe(201);
    expect((await postBytes(h.app, valid, Buffer.from('é2'), 'text/plain')).status).toBe(422);
    expect(h.runs()).toBe(1);
  });

  it('JSON parsed with invalid UTF-8 in a string: refused, never replayed one for the other', async () => {
    const h = await serve([bodyParser() as unknown as Reader]);
    const key = randomUUID();
    const body = (byte: number) =>
      Buffer.concat([Buffer.from('{"to":"'), Buffer.from([byte]), Buffer.from('"}')]);
    const first = await postBytes(h.app, key, body(0xff), 'application/json');
    const other = await postBytes(h.app, key, body(0xfe), 'application/json');
    expect([first.status, other.status]).toEqual([500, 500]);
    expect(h.errors).toEqual(['BodyAlreadyReadError', 'BodyAlreadyReadError']);
    expect(h.runs()).toBe(0);
  });

  it('a type it does not parse (octet-stream): read by idem from the stream, told apart', async () => {
    const h = await serve([bodyParser() as unknown as Reader]);
    const key = randomUUID();
    expect((await postBytes(h.app, key, Buffer.from('a'), 'application/octet-stream')).status).toBe(
      201,
    );
    expect((await postBytes(h.app, key, Buffer.from('b'), 'application/octet-stream')).status).toBe(
      422,
    );
    expect(h.runs()).toBe(1);
  });
});

describe('koa review: HTTP/2 (http2.createServer(app.callback()))', () => {
  async function h2(readers: Reader[]) {
    const made = app(readers);
    const server = createH2Server(made.koa.callback());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = http2Connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    client.on('error', () => {});
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    closers.push(() => client.destroy());
    return { ...made, client };
  }

  function post(client: ClientHttp2Session, key: string, body: string | undefined) {
    return new Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>(
      (resolve, reject) => {
        const stream = client.request(
          {
            ':method': 'POST',
            ':path': '/charges',
            'content-type': 'application/json',
            'idempotency-key': key,
          },
          { endStream: body === undefined },
        );
        let headers: IncomingHttpHeaders = {};
        const parts: Buffer[] = [];
        stream.on('response', (got) => {
          headers = got;
        });
        stream.on('data', (chunk: Buffer) => parts.push(chunk));
        stream.on('end', () =>
          resolve({
            status: Number(headers[':status']),
            headers,
            body: Buffer.concat(parts).toString(),
          }),
        );
        stream.on('error', reject);
        if (body !== undefined) stream.end(body);
      },
    );
  }

  it('@koa/bodyparser JSON without a Content-Length: replayed, another body 422', async () => {
    const h = await h2([bodyParser() as unknown as Reader]);
    const key = `"${randomUUID()}"`;
    expect((await post(h.client, key, '{"amount":1}')).status).toBe(201);
    const retry = await post(h.client, key, '{"amount":1}');
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect((await post(h.client, key, '{"amount":2}')).status).toBe(422);
    expect(h.runs()).toBe(1);
  });

  it('a rawBody Buffer reader over HTTP/2: fingerprinted, another body 422', async () => {
    const h = await h2([
      async (ctx, next) => {
        (ctx.request as { rawBody?: unknown }).rawBody = await getRawBody(ctx.req);
        await next();
      },
    ]);
    const key = `"${randomUUID()}"`;
    expect((await post(h.client, key, '{"amount":1}')).status).toBe(201);
    expect((await post(h.client, key, '{"amount":1}')).headers['idempotent-replayed']).toBe('true');
    expect((await post(h.client, key, '{"amount":2}')).status).toBe(422);
    expect(h.runs()).toBe(1);
  });

  it("a 'data' reader in flight over HTTP/2 is refused; a bodiless request with a resumed stream is not", async () => {
    const h = await h2([
      async (ctx, next) => {
        ctx.req.on('data', () => {});
        await next();
      },
    ]);
    const withBody = await post(h.client, `"${randomUUID()}"`, '{"amount":1}');
    expect(withBody.status).toBe(500);
    expect(h.errors).toEqual(['BodyAlreadyReadError']);
    const bodiless = await post(h.client, `"${randomUUID()}"`, undefined);
    expect(bodiless.status).toBe(201);
    expect(h.runs()).toBe(1);
  });
});
