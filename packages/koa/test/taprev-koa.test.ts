import { randomUUID } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { listening, send as sendOne } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { bodyParser } from '@koa/bodyparser';
import Koa, { type Middleware } from 'koa';
import { afterEach, describe, expect, it } from 'vitest';
import { getIdempotency, idempotency } from '../src/index.js';

// taprev: attacks on the tap (the body of a keyed request kept as it comes off the connection,
// fingerprinted in place of what @koa/bodyparser kept or made of it) and on keptJsonText,
// through real Koa on loopback.

interface Reply {
  status: number;
  replayed: boolean;
}

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

const FORM = 'application/x-www-form-urlencoded';
const JSON_TYPE = 'application/json';
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

type Store = ReturnType<typeof createMemoryStore>;

async function serve(store: Store, parserFirst: boolean) {
  const koa = new Koa();
  koa.silent = true;
  const parser = bodyParser({ enableTypes: ['json', 'form', 'text'] }) as unknown as Middleware;
  if (parserFirst) koa.use(parser);
  koa.use(idempotency({ store, scope: 'global', onWarning: () => {} }));
  if (!parserFirst) koa.use(parser);
  let runs = 0;
  const storageKeys = new Map<string, string>();
  koa.use(async (ctx) => {
    runs++;
    const context = getIdempotency(ctx);
    if (context) storageKeys.set(ctx.get('idempotency-key'), context.storageKey);
    ctx.status = 201;
    ctx.body = { runs };
  });
  const app = await listening(koa.listen(0, '127.0.0.1'));
  closers.push(() => app.close());
  const send = async (
    key: string,
    body: Buffer,
    headers: Record<string, string>,
    chunked = false,
  ): Promise<Reply> => {
    const exchange = await sendOne(app.url, '/charges', {
      key,
      body,
      headers,
      tenant: null,
      chunked,
    });
    return {
      status: exchange.status,
      replayed: exchange.headers['idempotent-replayed'] !== undefined,
    };
  };
  const fingerprint = async (key: string) =>
    (await store.get(storageKeys.get(key) ?? ''))?.fingerprint;
  return { send, runs: () => runs, fingerprint };
}

type Served = Awaited<ReturnType<typeof serve>>;

async function expectTold(
  h: Served,
  one: Buffer,
  two: Buffer,
  headers: Record<string, string>,
  chunked = false,
) {
  const key = randomUUID();
  const before = h.runs();
  expect((await h.send(key, one, headers, chunked)).status).toBe(201);
  const again = await h.send(key, one, headers, chunked);
  expect([again.status, again.replayed]).toEqual([201, true]);
  const other = await h.send(key, two, headers, chunked);
  expect([other.status, other.replayed]).toEqual([422, false]);
  expect(h.runs()).toBe(before + 1);
}

describe('taprev koa: ordinary requests keep their fingerprints (mount order does not matter)', () => {
  for (const [name, body, type] of [
    ['JSON', Buffer.from('{"b":2,"a":[1,"x"]}'), JSON_TYPE],
    ['a form', Buffer.from('to=alice&amount=1'), FORM],
    ['text', Buffer.from('pay 10 \u00e9'), 'text/plain'],
  ] as const) {
    for (const chunked of [false, true]) {
      it(`${name}${chunked ? ', chunked' : ''}: parser first and idem first store one fingerprint`, async () => {
        const store = createMemoryStore();
        const first = await serve(store, false);
        const after = await serve(store, true);
        const [a, b] = [randomUUID(), randomUUID()];
        expect((await first.send(a, body, { 'content-type': type }, chunked)).status).toBe(201);
        expect((await after.send(b, body, { 'content-type': type }, chunked)).status).toBe(201);
        const reference = await first.fingerprint(a);
        expect(reference).toMatch(/\S/);
        expect(await after.fingerprint(b)).toBe(reference);
      });
    }
  }
});

describe('taprev koa: what @koa/bodyparser keeps is not what tells bodies apart', () => {
  it('gzip: a form with a leading BOM and without one are told apart', async () => {
    const h = await serve(createMemoryStore(), true);
    await expectTold(
      h,
      gzipSync(Buffer.concat([BOM, Buffer.from('a=1')])),
      gzipSync(Buffer.from('a=1')),
      { 'content-type': FORM, 'content-encoding': 'gzip' },
    );
  });

  it('gzip, chunked: JSON with a repeated member name and the name once are told apart', async () => {
    const h = await serve(createMemoryStore(), true);
    await expectTold(
      h,
      gzipSync(Buffer.from('{"to":"alice","to":"mallory"}')),
      gzipSync(Buffer.from('{"to":"mallory"}')),
      { 'content-type': JSON_TYPE, 'content-encoding': 'gzip' },
      true,
    );
  });

  it('JSON integers past 2^53 that parse alike are told apart (the kept text)', async () => {
    const h = await serve(createMemoryStore(), true);
    await expectTold(
      h,
      Buffer.from('{"id":9007199254740993}'),
      Buffer.from('{"id":9007199254740992}'),
      { 'content-type': JSON_TYPE },
    );
  });

  it('held: JSON with the same value spelled otherwise (spaces, order) is replayed', async () => {
    const h = await serve(createMemoryStore(), true);
    const key = randomUUID();
    const type = { 'content-type': JSON_TYPE };
    expect((await h.send(key, Buffer.from('{"a":1,"b":[2]}'), type)).status).toBe(201);
    const again = await h.send(key, Buffer.from('{ "b" : [2], "a" : 1 }'), type, true);
    expect([again.status, again.replayed]).toEqual([201, true]);
  });
});
