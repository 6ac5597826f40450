import { randomUUID } from 'node:crypto';
import { request } from 'node:http';
import { listening } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { bodyParser } from '@koa/bodyparser';
import Koa, { type Context, type Next } from 'koa';
import { afterEach, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// formrev2: attacks on cf3d9b3/dd8c060 under Koa (@koa/bodyparser's kept text for parsed
// non-JSON objects; its length guard; a kept Buffer first). Real Koa on loopback.

type Reader = (ctx: Context, next: Next) => Promise<unknown>;
const FORM = 'application/x-www-form-urlencoded';
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

async function serve(reader: Reader, echo = true) {
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
    ctx.body = { runs, body: echo ? ((ctx.request as { body?: unknown }).body ?? null) : null };
  });
  const app = await listening(koa.listen(0, '127.0.0.1'));
  closers.push(() => app.close());
  const send = (
    key: string,
    body: Buffer | undefined,
    type: string | undefined,
    opts: { chunked?: boolean; method?: string } = {},
  ): Promise<Reply> => {
    const headers: Record<string, string> = { 'idempotency-key': key };
    if (type) headers['content-type'] = type;
    if (body !== undefined) {
      if (opts.chunked) headers['transfer-encoding'] = 'chunked';
      else headers['content-length'] = String(body.length);
    }
    return new Promise((resolve, reject) => {
      const req = request(
        new URL('/charges', app.url),
        { method: opts.method ?? 'POST', headers, agent: false },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              replayed: res.headers['idempotent-replayed'] !== undefined,
              body: Buffer.concat(chunks).toString(),
            }),
          );
        },
      );
      req.setTimeout(5000, () => req.destroy(new Error('timed out')));
      req.on('error', reject);
      if (body !== undefined && body.length > 0) req.write(body);
      req.end();
    });
  };
  return { send, errors, runs: () => runs };
}

type Served = Awaited<ReturnType<typeof serve>>;

async function expectTold(
  h: Served,
  one: Buffer,
  two: Buffer,
  type = FORM,
  opts: { chunked?: boolean } = {},
) {
  const key = randomUUID();
  const first = await h.send(key, one, type, opts);
  expect(first.status).toBe(201);
  const other = await h.send(key, two, type, opts);
  expect(other.replayed).toBe(false);
  expect(other.status).toBe(422);
  expect(h.runs()).toBe(1);
}

describe('formrev2 koa: the kept text length guard', () => {
  it('held: a form with a leading BOM and a Content-Length is refused (500)', async () => {
    const h = await serve(bodyParser() as unknown as Reader);
    const r = await h.send(randomUUID(), Buffer.concat([BOM, Buffer.from('a=1')]), FORM);
    expect(r.status).toBe(500);
    expect(h.errors[0]?.name).toBe('BodyAlreadyReadError');
    expect(h.runs()).toBe(0);
  });

  // Was FINDING (LOW), fixed (the bytes as sent, tapped before the parser, are fingerprinted in
  // place of the kept text): under Transfer-Encoding: chunked there is no Content-Length and the
  // kept-text length guard is skipped; co-body (raw-body + iconv-lite) strips a leading BOM,
  // so "\uFEFFa=1" and "a=1" keep the same text: the second is replayed (201) instead of 422.
  // Fix: without a Content-Length (or with a Content-Encoding) the guard cannot run; refuse
  // kept text there unless it is known to be the bytes (a Buffer), or count the bytes read.
  it('chunked: a leading BOM and none are told apart (or refused)', async () => {
    const h = await serve(bodyParser() as unknown as Reader);
    await expectTold(h, Buffer.concat([BOM, Buffer.from('a=1')]), Buffer.from('a=1'), FORM, {
      chunked: true,
    });
  });

  // Was FINDING (LOW), fixed (the tapped bytes): the commit says the length guard "also catches encoding: 'utf-16le'";
  // under chunked it never runs, so f8229ef's own utf-16le pair (an odd trailing byte
  // dropped) is replayed again.
  it("chunked: encoding 'utf-16le', an odd trailing byte is not lost", async () => {
    const h = await serve(bodyParser({ encoding: 'utf-16le' }) as unknown as Reader);
    const body = (last: number) => Buffer.from([0x61, 0, 0x3d, 0, 0x31, 0, last]);
    await expectTold(h, body(0x78), body(0x79), FORM, { chunked: true });
  });

  // Was FINDING (LOW), fixed (the tapped bytes, once the guard passed): with a Content-Length too, the guard is beaten by lengths that happen to
  // agree: UTF-16LE decodes "a=" to U+3D61, three bytes as UTF-8, and drops the odd third
  // byte, so "a=X" and "a=Y" (Content-Length 3) keep the same 3-byte text: replayed. Any
  // length can be met (mix units of 1, 2 and 3 UTF-8 bytes). Fix: a length equality does not
  // prove a UTF-8 decoding; refuse kept text that holds non-ASCII unless it re-encodes to
  // bytes a UTF-8 decoder would give for that length AND is valid in the declared charset,
  // or simply require a Buffer (ctx.request.rawBody as bytes) when any non-ASCII is present.
  it("Content-Length: encoding 'utf-16le', 'a=X' and 'a=Y' are told apart (or refused)", async () => {
    const h = await serve(bodyParser({ encoding: 'utf-16le' }) as unknown as Reader);
    await expectTold(h, Buffer.from('a=X'), Buffer.from('a=Y'));
  });
});

describe('formrev2 koa: body-less requests and the parser {}', () => {
  it('held: GET and DELETE without a body run', async () => {
    const h = await serve(bodyParser() as unknown as Reader);
    for (const method of ['GET', 'DELETE']) {
      const r = await h.send(randomUUID(), undefined, undefined, { method });
      expect(r.status).toBe(201);
    }
  });

  it('held: a chunked empty form and a Content-Length: 0 form both run', async () => {
    const h = await serve(bodyParser() as unknown as Reader);
    expect((await h.send(randomUUID(), Buffer.alloc(0), FORM, { chunked: true })).status).toBe(201);
    expect((await h.send(randomUUID(), Buffer.alloc(0), FORM)).status).toBe(201);
  });

  it('held: an empty form and a form that parses to {} are never one request', async () => {
    const h = await serve(bodyParser() as unknown as Reader);
    await expectTold(h, Buffer.alloc(0), Buffer.from('=1'));
  });
});

describe('formrev2 koa: JSON-ish types', () => {
  for (const type of [
    'application/json; charset=utf-8',
    'application/merge-patch+json',
    'application/vnd.api+json',
    'application/vnd.x+json',
  ]) {
    it(`held: ${type}: runs, replays its own body, 422s another`, async () => {
      const h = await serve(bodyParser() as unknown as Reader);
      const key = randomUUID();
      expect((await h.send(key, Buffer.from('{"a":1,"b":2}'), type)).status).toBe(201);
      const same = await h.send(key, Buffer.from('{"b":2,"a":1}'), type);
      expect([same.status, same.replayed]).toEqual([201, true]);
      expect((await h.send(key, Buffer.from('{"a":1,"b":3}'), type)).status).toBe(422);
    });
  }

  it('held: application/csp-report (a default @koa/bodyparser JSON type, not JSON to idem): the kept text is fingerprinted', async () => {
    const h = await serve(bodyParser() as unknown as Reader);
    await expectTold(
      h,
      Buffer.from('{"csp-report":{"blocked-uri":"a"}}'),
      Buffer.from('{"csp-report":{"blocked-uri":"b"}}'),
      'application/csp-report',
    );
  });

  // Was FINDING (LOW), fixed (keptJsonText: the kept text when it says more than the value):
  // for a JSON type the parsed value is
  // fingerprinted although @koa/bodyparser kept the text on ctx.request.rawBody: a repeated
  // member name or an integer past 2^53 makes two bodies one request (replayed), while
  // bodyFromBytes on the kept text (as for a kept Buffer, and as keptText does for forms)
  // would tell them apart. Fix: for a JSON type, fingerprint kept text first too (through
  // bodyFromParsed(raw, ...), which refuses U+FFFD / lone surrogates / other charsets).
  it('JSON with a repeated member name, text kept by @koa/bodyparser: told apart', async () => {
    const h = await serve(bodyParser() as unknown as Reader);
    await expectTold(
      h,
      Buffer.from('{"to":"alice","to":"mallory"}'),
      Buffer.from('{"to":"mallory"}'),
      'application/json',
    );
  });

  it('held: chunked JSON runs and 422s another body', async () => {
    const h = await serve(bodyParser() as unknown as Reader);
    await expectTold(h, Buffer.from('{"a":1}'), Buffer.from('{"a":2}'), 'application/json', {
      chunked: true,
    });
  });
});

describe('formrev2 koa: values a custom parser makes', () => {
  it('held: a cycle gives a clear 500, nothing run', async () => {
    const h = await serve(async (ctx, next) => {
      for await (const _ of ctx.req) {
        // drain
      }
      const node: Record<string, unknown> = { a: 1 };
      node.self = node;
      (ctx.request as { body?: unknown }).body = node;
      await next();
    });
    const r = await h.send(randomUUID(), Buffer.from('{"a":1}'), 'application/json');
    expect(r.status).toBe(500);
    expect(h.errors[0]?.name).toBe('BodyAlreadyReadError');
    expect(h.errors[0]?.message).toMatch(/no JSON text/);
    expect(h.runs()).toBe(0);
  });

  it('held: a cycle under a form type with kept text: the text is fingerprinted', async () => {
    const h = await serve(async (ctx, next) => {
      const parts: Buffer[] = [];
      for await (const chunk of ctx.req) parts.push(chunk as Buffer);
      const node: Record<string, unknown> = { a: 1 };
      node.self = node;
      (ctx.request as { body?: unknown }).body = node;
      (ctx.request as { rawBody?: unknown }).rawBody = Buffer.concat(parts).toString();
      await next();
    }, false);
    await expectTold(h, Buffer.from('a=1&x=1'), Buffer.from('a=1&x=2'));
  });
});

describe('formrev2 koa: kept bytes not as many as the Content-Length', () => {
  // Was FINDING (LOW), fixed: a Buffer on ctx.request.rawBody was fingerprinted as the body
  // without the length check Express has (req.rawBody), so a reader that keeps a part (a
  // prefix, a signature window) made two bodies one request: the second was replayed the
  // first's outcome. Now refused as on Express (BodyAlreadyReadError, 500, nothing run).
  const ONE = Buffer.from('to=alice&amount=1');
  const OTHER = Buffer.from('to=alice&amount=9999');
  /** Reads the whole body, keeps `keep(bytes)` on ctx.request.rawBody and, when `parse`, the form. */
  const keeping =
    (keep: (bytes: Buffer) => Buffer, parse = true): Reader =>
    async (ctx, next) => {
      const parts: Buffer[] = [];
      for await (const chunk of ctx.req) parts.push(chunk as Buffer);
      const bytes = Buffer.concat(parts);
      const request = ctx.request as { body?: unknown; rawBody?: unknown };
      if (parse) request.body = Object.fromEntries(new URLSearchParams(bytes.toString()));
      request.rawBody = keep(bytes);
      await next();
    };
  const prefix = (bytes: Buffer) => Buffer.from(bytes.subarray(0, 8));

  for (const parse of [true, false]) {
    const what = parse ? 'a parsed form' : 'no body parsed (a signature check)';
    it(`kept bytes shorter than the Content-Length, ${what}: refused (500, nothing run)`, async () => {
      const h = await serve(keeping(prefix, parse));
      const key = randomUUID();
      for (const body of [ONE, OTHER]) {
        const r = await h.send(key, body, FORM);
        expect([r.status, r.replayed]).toEqual([500, false]);
      }
      expect(h.errors.map((error) => error.name)).toEqual(Array(2).fill('BodyAlreadyReadError'));
      expect(h.errors[0]?.message).toMatch(
        /kept as ctx\.request\.rawBody are 8 where 17 were sent/,
      );
      expect(h.runs()).toBe(0);
    });

    it(`held: the whole body kept, ${what}: runs, replays itself, 422s another`, async () => {
      const h = await serve(keeping((bytes) => bytes, parse));
      const key = randomUUID();
      expect((await h.send(key, ONE, FORM)).status).toBe(201);
      const again = await h.send(key, ONE, FORM);
      expect([again.status, again.replayed]).toEqual([201, true]);
      const other = await h.send(key, OTHER, FORM);
      expect([other.status, other.replayed]).toEqual([422, false]);
      expect(h.runs()).toBe(1);
    });
  }

  it('kept bytes longer than the Content-Length: refused (500, nothing run)', async () => {
    const h = await serve(keeping((bytes) => Buffer.concat([bytes, Buffer.from('&')])));
    expect((await h.send(randomUUID(), ONE, FORM)).status).toBe(500);
    expect(h.errors[0]?.name).toBe('BodyAlreadyReadError');
    expect(h.errors[0]?.message).toMatch(/are 18 where 17 were sent/);
    expect(h.runs()).toBe(0);
  });

  // A chunked body has no Content-Length to measure kept bytes against, so a kept prefix is
  // not refused; it is not taken for the body either: the bytes as sent, tapped before the
  // reader, are fingerprinted in its place, so two bodies sharing the prefix are told apart.
  it('chunked: a kept prefix is never taken for the body (told apart, 422)', async () => {
    const h = await serve(keeping(prefix));
    const key = randomUUID();
    expect((await h.send(key, ONE, FORM, { chunked: true })).status).toBe(201);
    const again = await h.send(key, ONE, FORM, { chunked: true });
    expect([again.status, again.replayed]).toEqual([201, true]);
    const other = await h.send(key, OTHER, FORM, { chunked: true });
    expect([other.status, other.replayed]).toEqual([422, false]);
    expect(h.runs()).toBe(1);
  });
});
