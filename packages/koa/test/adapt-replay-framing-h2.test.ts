// @idem/koa over HTTP/1.1 and h2c: upstream middleware that sets a framing header
// (`ctx.set('Content-Length', ...)`, `Transfer-Encoding`) before the idempotency layer. A
// replay must be framed by its own body: over HTTP/1.1 never a Content-Length of another
// length (a desync) nor beside chunked framing; over HTTP/2 never a Content-Length that does
// not match the DATA (a malformed response, RFC 9113 8.1.1) nor a Transfer-Encoding (a
// connection-specific field node:http2 refuses: the replay failed) (adapt-left N3).
import { createServer as createH1Server } from 'node:http';
import { createServer as createH2Server, connect as h2Connect } from 'node:http2';
import type { AddressInfo, Server } from 'node:net';
import { Readable } from 'node:stream';
import { rawFraming, rawIsReplay, rawPost, rawStatusLine } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

const CHUNKS = ['alpha-', 'beta-', 'gamma-', 'delta'];
let runs = 0;
const servers: Server[] = [];
let h1 = 0;
let h2 = 0;

function app(): Koa {
  const koa = new Koa();
  koa.silent = true;
  koa.use(async (ctx, next) => {
    const framing = ctx.get('x-framing');
    if (framing === 'cl') ctx.set('content-length', '3');
    if (framing === 'te') ctx.set('transfer-encoding', 'chunked');
    await next();
  });
  koa.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  koa.use((ctx) => {
    runs++;
    ctx.status = 201;
    ctx.type = 'text/plain';
    if (ctx.path === '/whole') {
      ctx.body = CHUNKS.join('');
      return;
    }
    let i = 0;
    ctx.body = new Readable({
      read() {
        if (i < CHUNKS.length) setTimeout(() => this.push(CHUNKS[i++]), 5);
        else this.push(null);
      },
    });
  });
  return koa;
}

async function listen(server: Server): Promise<number> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

beforeAll(async () => {
  h1 = await listen(createH1Server(app().callback()));
  h2 = await listen(createH2Server(app().callback()));
});
afterAll(() =>
  Promise.all(
    servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
  ),
);

interface Seen {
  status: number;
  replayed: boolean;
  /** The body as its framing delimits it. */
  body: string;
  /** The framing was consistent: one of CL/TE over HTTP/1.1 and the body exactly as framed; a well-formed HTTP/2 stream. */
  wellFramed: boolean;
}

/** HTTP/1.1 over a raw socket (`Connection: close`): the bytes as they came. */
async function post1(path: string, key: string, framing: string): Promise<Seen> {
  const raw = await rawPost(`http://127.0.0.1:${h1}`, path, key, '', `X-Framing: ${framing}\r\n`);
  const { framing: framedBy, body, exact } = rawFraming(raw);
  return {
    status: Number(rawStatusLine(raw).toString().slice(9, 12)),
    replayed: rawIsReplay(raw),
    body,
    wellFramed: exact && framedBy !== 'both' && framedBy !== 'close',
  };
}

function post2(path: string, key: string, framing: string): Promise<Seen> {
  return new Promise((resolve) => {
    const session = h2Connect(`http://127.0.0.1:${h2}`);
    session.on('error', () => {});
    const stream = session.request({
      ':method': 'POST',
      ':path': path,
      'idempotency-key': key,
      'x-framing': framing,
    });
    const seen: Seen = { status: 0, replayed: false, body: '', wellFramed: false };
    let ended = false;
    stream.on('response', (head) => {
      seen.status = Number(head[':status']);
      seen.replayed = head['idempotent-replayed'] === 'true';
    });
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      seen.body += chunk;
    });
    stream.on('end', () => {
      ended = true;
    });
    stream.on('error', () => {});
    stream.on('close', () => {
      seen.wellFramed = ended && stream.rstCode === 0;
      session.close();
      resolve(seen);
    });
    stream.end();
  });
}

describe('@idem/koa: a replay is framed by its own body whatever upstream middleware set', () => {
  for (const [protocol, post] of [
    ['HTTP/1.1', post1],
    ['h2c', post2],
  ] as const) {
    for (const path of ['/stream', '/whole']) {
      it.each(['cl', 'te'])(`${protocol} ${path}: upstream framing %s`, async (framing) => {
        const key = `n3-koa-${protocol}-${path}-${framing}-${Math.random()}`;
        const before = runs;
        const first = await post(path, key, 'none');
        expect(first).toMatchObject({ status: 201, body: CHUNKS.join(''), wellFramed: true });
        const replay = await post(path, key, framing);
        expect(replay).toEqual({
          status: 201,
          replayed: true,
          body: CHUNKS.join(''),
          wellFramed: true,
        });
        expect(runs).toBe(before + 1);
      });
    }
  }
});
