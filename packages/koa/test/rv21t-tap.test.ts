import { randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import { listening, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { bodyParser } from '@koa/bodyparser';
import Koa, { type Middleware } from 'koa';
import { afterEach, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rv21t: adversarial review of the request-body tap through real Koa on loopback: a form
// parser under a JSON type (what @koa/bodyparser's kept text does not tell apart), pipelined
// keyed bodies on one connection, and two apps with other limits in one process.

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

type Store = ReturnType<typeof createMemoryStore>;

async function serve(
  store: Store,
  parser: Middleware,
  options: { maxBodyBytes?: number; headerName?: string } = {},
) {
  const koa = new Koa();
  koa.silent = true;
  koa.use(parser);
  koa.use(idempotency({ store, scope: 'global', onWarning: () => {}, ...options }));
  let runs = 0;
  koa.use(async (ctx) => {
    runs++;
    ctx.status = 201;
    ctx.body = { runs };
  });
  const app = await listening(koa.listen(0, '127.0.0.1'));
  closers.push(() => app.close());
  const post = async (
    key: string,
    body: Buffer,
    headers: Record<string, string>,
    chunked = false,
  ): Promise<[number, boolean]> => {
    const exchange = await send(app.url, '/charges', { key, body, headers, tenant: null, chunked });
    return [exchange.status, exchange.headers['idempotent-replayed'] !== undefined];
  };
  return { post, runs: () => runs, url: app.url };
}

/** Writes `payload` on one connection and reads `count` responses (Content-Length framed). */
function pipelined(url: string, payload: Buffer, count: number): Promise<number[]> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1');
    let received = Buffer.alloc(0);
    const statuses: number[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('pipelined exchange timed out'));
    }, 10_000);
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      for (;;) {
        const text = received.toString('latin1');
        const end = text.indexOf('\r\n\r\n');
        if (end < 0) return;
        const length = Number(/content-length: *(\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
        if (received.length < end + 4 + length) return;
        statuses.push(Number(text.slice(9, 12)));
        received = received.subarray(end + 4 + length);
        if (statuses.length === count) {
          clearTimeout(timer);
          socket.end();
          resolve(statuses);
          return;
        }
      }
    });
    socket.on('error', reject);
    socket.on('connect', () => socket.write(payload));
  });
}

const JSON_TYPE = { 'content-type': 'application/json' };
const TEXT = { 'content-type': 'text/plain' };

describe('rv21t koa: a parser that transforms', () => {
  // Was FINDING (MEDIUM), fixed (the tapped bytes for a JSON-typed object too): a form parser
  // under a JSON type (extendTypes) makes one object of `{"a":1}&=2` and `{"a":1}&=9` (qs drops
  // the empty-named pair), and the kept text is no JSON that keptJsonText looks into: the
  // second body was replayed the first one's answer.
  it('extendTypes form: application/json: `{`-led bodies that differ are 422, run once', async () => {
    const h = await serve(
      createMemoryStore(),
      bodyParser({
        enableTypes: ['form'],
        extendTypes: { form: ['application/json'] },
      }) as unknown as Middleware,
    );
    const key = randomUUID();
    expect(await h.post(key, Buffer.from('{"a":1}&=2'), JSON_TYPE)).toEqual([201, false]);
    expect(await h.post(key, Buffer.from('{"a":1}&=2'), JSON_TYPE, true)).toEqual([201, true]);
    expect(await h.post(key, Buffer.from('{"a":1}&=9'), JSON_TYPE)).toEqual([422, false]);
    expect(h.runs()).toBe(1);
  });

  it('held: the usual JSON after @koa/bodyparser: spacing and member order are one request', async () => {
    const h = await serve(createMemoryStore(), bodyParser() as unknown as Middleware);
    const key = randomUUID();
    expect(await h.post(key, Buffer.from('{"a":1,"b":[1,2]}'), JSON_TYPE)).toEqual([201, false]);
    expect(await h.post(key, Buffer.from(' {"b":[1, 2], "a":1}\n'), JSON_TYPE, true)).toEqual([
      201,
      true,
    ]);
    expect(await h.post(key, Buffer.from('{"a":1,"b":[1,3]}'), JSON_TYPE)).toEqual([422, false]);
    expect(h.runs()).toBe(1);
  });
});

describe('rv21t koa: pipelined keyed bodies on one keep-alive connection', () => {
  it('each body is fingerprinted as its own (a leading BOM the text parser strips included)', async () => {
    const h = await serve(
      createMemoryStore(),
      bodyParser({ enableTypes: ['text'] }) as unknown as Middleware,
    );
    const keys = [randomUUID(), randomUUID()];
    const bodies = ['\ufeffpay 10', 'pay 10'];
    const chunked = (key: string, body: string) =>
      `POST /charges HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n0\r\n\r\n`;
    const payload = Buffer.from(
      chunked(keys[0] as string, bodies[0] as string) +
        chunked(keys[1] as string, bodies[1] as string),
    );
    expect(await pipelined(h.url, payload, 2)).toEqual([201, 201]);
    for (let i = 0; i < 2; i++) {
      const key = keys[i] as string;
      expect(await h.post(key, Buffer.from(bodies[i] as string), TEXT, true)).toEqual([201, true]);
      expect(await h.post(key, Buffer.from(bodies[1 - i] as string), TEXT, true)).toEqual([
        422,
        false,
      ]);
    }
    expect(h.runs()).toBe(2);
  });
});

describe('rv21t koa: two apps with other options in one process', () => {
  it("one app's 32-byte limit and header leave the other's requests alone", async () => {
    const store = createMemoryStore();
    const parser = () => bodyParser({ enableTypes: ['text'] }) as unknown as Middleware;
    const small = await serve(store, parser(), { maxBodyBytes: 32, headerName: 'X-Small' });
    const big = await serve(store, parser());
    const body = Buffer.from('z'.repeat(200));
    const smallKeyed = await send(small.url, '/charges', {
      key: null,
      body,
      headers: { ...TEXT, 'x-small': randomUUID() },
      tenant: null,
      chunked: true,
    });
    expect(smallKeyed.status).toBe(413);
    const key = randomUUID();
    expect(await big.post(key, body, { ...TEXT, 'x-small': 'k' }, true)).toEqual([201, false]);
    expect(await big.post(key, body, TEXT)).toEqual([201, true]);
    expect(small.runs() + big.runs()).toBe(1);
  });
});
