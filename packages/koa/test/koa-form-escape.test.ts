import { randomUUID } from 'node:crypto';
import { type Exchange, listening, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { bodyParser } from '@koa/bodyparser';
import Koa, { type Context, type Next } from 'koa';
import { afterEach, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// The invalid percent-escape finding (review13, @idem/express) on Koa: form parsers leave an
// escape they cannot decode as it is, so `a=%FF` and `a=%25FF` both parse to { a: '%FF' } (and
// `a=%ZZ`, `a=%25ZZ` to { a: '%ZZ' }). A parsed form holding a '%' is refused as decoded,
// unless the text was kept on ctx.request.rawBody (as @koa/bodyparser keeps it): then that
// text is fingerprinted. Real Koa on loopback.

type Reader = (ctx: Context, next: Next) => Promise<unknown>;
const FORM = 'application/x-www-form-urlencoded';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

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
    ctx.body = { runs };
  });
  const app = await listening(koa.listen(0, '127.0.0.1'));
  closers.push(() => app.close());
  const postBytes = (key: string, body: Buffer): Promise<Exchange> =>
    send(app.url, '/charges', { key, body, headers: { 'content-type': FORM } });
  const post = (key: string, body: string) => postBytes(key, Buffer.from(body));
  return { url: app.url, post, postBytes, errors, runs: () => runs };
}

/** A form parser that keeps no text: URLSearchParams, which leaves `%ZZ` as it is too. */
const searchParamsReader: Reader = async (ctx, next) => {
  const parts: Buffer[] = [];
  for await (const chunk of ctx.req) parts.push(chunk as Buffer);
  (ctx.request as { body?: unknown }).body = Object.fromEntries(
    new URLSearchParams(Buffer.concat(parts).toString()),
  );
  await next();
};

describe('koa: a parsed form holding a % (invalid percent-escapes)', () => {
  it('a parser that keeps no text: a=%ZZ and a=%25ZZ are both refused, nothing run, never replayed', async () => {
    const h = await serve(searchParamsReader);
    const key = randomUUID();
    const first = await h.post(key, 'a=%ZZ');
    const other = await h.post(key, 'a=%25ZZ');
    expect([first.status, other.status]).toEqual([500, 500]);
    expect(other.headers['idempotent-replayed']).toBeUndefined();
    expect(h.errors.map((error) => error.name)).toEqual([
      'BodyAlreadyReadError',
      'BodyAlreadyReadError',
    ]);
    expect(h.errors[0]?.message).toMatch(/parsed into names and values/);
    expect(h.runs()).toBe(0);
  });

  // Was held: a parsed form without a decoded '%' was fingerprinted as parsed. formfix: a
  // parser that keeps no text has every parsed form refused (its losses are not only '%').
  it('formfix: the same parser, a form without a decoded %: refused, nothing run', async () => {
    const h = await serve(searchParamsReader);
    const key = randomUUID();
    expect((await h.post(key, 'to=J%C3%A9r%C3%B4me+D&amount=10')).status).toBe(500);
    expect((await h.post(key, 'to=J%C3%A9r%C3%B4me+D&amount=11')).status).toBe(500);
    expect(h.errors[0]?.message).toMatch(/parsed into names and values/);
    expect(h.runs()).toBe(0);
  });

  for (const [one, two] of [
    ['a=%FF', 'a=%25FF'],
    ['a=%ZZ', 'a=%25ZZ'],
    ['a[b][%ZZ]=1', 'a[b][%25ZZ]=1'],
    ['a=50%25', 'a=50%2525'],
  ] as const) {
    it(`@koa/bodyparser (text kept on ctx.request.rawBody): ${one} runs and replays, ${two} is 422`, async () => {
      const h = await serve(bodyParser() as unknown as Reader);
      const key = randomUUID();
      expect((await h.post(key, one)).status).toBe(201);
      expect((await h.post(key, one)).headers['idempotent-replayed']).toBe('true');
      const other = await h.post(key, two);
      expect(other.headers['idempotent-replayed']).toBeUndefined();
      expect(other.status).toBe(422);
      expect(h.runs()).toBe(1);
    });
  }

  it('held: @koa/bodyparser, kept text holding U+FFFD (invalid UTF-8 beside a %): refused, nothing run', async () => {
    const h = await serve(bodyParser() as unknown as Reader);
    const key = randomUUID();
    const body = (byte: number) => Buffer.concat([Buffer.from('a=%ZZ&b='), Buffer.from([byte])]);
    const first = await h.postBytes(key, body(0xff));
    const other = await h.postBytes(key, body(0xfe));
    expect([first.status, other.status]).toEqual([500, 500]);
    expect(h.runs()).toBe(0);
  });

  it('@koa/bodyparser, valid JSON holding U+FFFD (an escape): its kept text is fingerprinted, not refused', async () => {
    // Refused before this change (the parsed value holds U+FFFD, as an invalid body's would);
    // the kept text is the bytes as sent, which tell the two apart.
    const h = await serve(bodyParser() as unknown as Reader);
    const key = randomUUID();
    const json = (text: string) =>
      send(h.url, '/charges', {
        key,
        body: Buffer.from(text),
        headers: { 'content-type': 'application/json' },
      });
    expect((await json('{"note":"\\ufffd"}')).status).toBe(201);
    expect((await json('{"note":"\\ufffd"}')).headers['idempotent-replayed']).toBe('true');
    expect((await json('{"note":"x\\ufffd"}')).status).toBe(422);
    expect(h.runs()).toBe(1);
  });
});
