import { listening, postGot } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { bodyParser } from '@koa/bodyparser';
import Koa from 'koa';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// fprev23 (see packages/http/test/fprev23-review.test.ts): the media type's U+00A0 finding on
// a real Koa app on loopback: idem, then @koa/bodyparser, then a route answering what it got.

const closers: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const close of closers.splice(0)) await close();
});

describe('fprev23 koa: U+00A0 after the media type', () => {
  // FINDING HIGH (isolation; fixed in @idem/http): `application/json\u00a0` was fingerprinted as
  // `application/json` (String#trim, `\s`), while @koa/bodyparser (type-is) does not take it
  // for JSON and leaves the body unparsed: the route answered a request without a body, and
  // the same key's retry as `application/json`, which the route reads, was replayed that answer.
  it('`application/json\\u00a0` (unparsed) then `application/json`: 422, not a replay', async () => {
    const koa = new Koa();
    koa.silent = true;
    koa.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
    koa.use(bodyParser());
    let runs = 0;
    koa.use(async (ctx) => {
      runs++;
      ctx.status = 201;
      const body = (ctx.request as { body?: unknown }).body;
      ctx.body = {
        got: body === undefined || Object.keys(body as object).length === 0 ? null : body,
      };
    });
    const app = await listening(koa.listen(0, '127.0.0.1'));
    closers.push(app.close);
    const post = (key: string, contentType: string) =>
      postGot(app.url, '/x', key, Buffer.from('{"amount":5}'), contentType);
    expect(await post('k-koa-nbsp', 'application/json\u00a0')).toEqual({
      status: 201,
      replayed: false,
      got: null,
    });
    expect((await post('k-koa-fresh', 'application/json')).got).toEqual({ amount: 5 });
    const second = await post('k-koa-nbsp', 'application/json');
    // Observed before the fix: 201, replayed, got null.
    expect([second.status, second.replayed]).toEqual([422, false]);
    expect(runs).toBe(2);
  });
});
