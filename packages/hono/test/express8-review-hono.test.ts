import { connect as connectHttp2, createServer as createHttp2Server } from 'node:http2';
import { type AddressInfo, connect } from 'node:net';
import { type ServerType, serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Review of wt/express8 on Hono (@hono/node-server): `peekBody`'s fast path reads a body that
// is buffered whole in the same tick. Pipelined requests, Content-Length mismatches and chunk
// boundaries over raw sockets, and HTTP/2 (node-server's http2 compat requests reach peekBody).

interface RawResponse {
  status: number;
  body: string;
}

/** Sends `packet` in one write; resolves with the first `count` responses (Content-Length bodies). */
function exchange(port: number, packet: string, count: number): Promise<RawResponse[]> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let data = Buffer.alloc(0);
    const responses: RawResponse[] = [];
    const finish = () => {
      socket.destroy();
      resolve(responses);
    };
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      for (;;) {
        const end = data.indexOf('\r\n\r\n');
        if (end < 0) break;
        const headText = data.subarray(0, end).toString('latin1');
        const length = Number(/content-length: *(\d+)/i.exec(headText)?.[1] ?? 0);
        if (data.length < end + 4 + length) break;
        responses.push({
          status: Number(headText.split(' ')[1]),
          body: data.subarray(end + 4, end + 4 + length).toString('utf8'),
        });
        data = data.subarray(end + 4 + length);
      }
      if (responses.length >= count) finish();
    });
    socket.on('close', finish);
    socket.on('error', reject);
    socket.on('connect', () => socket.write(packet));
  });
}

const head = (key: string, length: number | 'chunked') =>
  `POST /echo HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\nContent-Type: application/json\r\n${
    length === 'chunked' ? 'Transfer-Encoding: chunked' : `Content-Length: ${length}`
  }\r\n\r\n`;
const chunked = (...pieces: string[]) =>
  `${pieces.map((p) => `${Buffer.byteLength(p).toString(16)}\r\n${p}\r\n`).join('')}0\r\n\r\n`;

let runs = 0;
function app(): Hono {
  const hono = new Hono();
  hono.use(
    '/echo',
    idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }),
  );
  hono.post('/echo', async (c) => {
    runs++;
    return c.json({ run: runs, body: await c.req.text() }, 201);
  });
  hono.get('/plain', (c) => c.json({ plain: true }));
  return hono;
}

const servers: ServerType[] = [];
let port = 0;
let h2port = 0;
beforeAll(async () => {
  port = await new Promise<number>((resolve) => {
    servers.push(
      serve({ fetch: app().fetch, port: 0, hostname: '127.0.0.1' }, (info) => resolve(info.port)),
    );
  });
  h2port = await new Promise<number>((resolve) => {
    const server = serve({
      fetch: app().fetch,
      port: 0,
      hostname: '127.0.0.1',
      createServer: createHttp2Server,
    });
    servers.push(server);
    server.once('listening', () => resolve((server.address() as AddressInfo).port));
  });
});
afterAll(async () => {
  for (const server of servers) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

let keys = 0;
const freshKey = () => `e8h-${process.pid}-${++keys}`;

describe('peekBody fast path behind Hono', () => {
  it('pipelined requests in one write, the first with more bytes after its Content-Length: each body its own', async () => {
    const a = '{"a":1}';
    const b = '{"b":"two"}';
    const responses = await exchange(
      port,
      `${head(freshKey(), a.length)}${a}GET /plain HTTP/1.1\r\nHost: x\r\n\r\n${head(freshKey(), b.length)}${b}`,
      3,
    );
    expect(responses.map((r) => r.status)).toEqual([201, 200, 201]);
    expect(JSON.parse(responses[0]?.body ?? '').body).toBe(a);
    expect(JSON.parse(responses[2]?.body ?? '').body).toBe(b);
  });

  it('a chunked body whole in one packet and then chunked otherwise: one run, a replay, then 422', async () => {
    const key = freshKey();
    const body = '{"chunked":"hono","n":1}';
    const before = runs;
    const [first] = await exchange(port, head(key, 'chunked') + chunked(body), 1);
    expect(first?.status).toBe(201);
    expect(JSON.parse(first?.body ?? '').body).toBe(body);
    const [again] = await exchange(
      port,
      head(key, 'chunked') + chunked(body.slice(0, 4), body.slice(4)),
      1,
    );
    expect(again?.body).toBe(first?.body);
    expect(runs - before).toBe(1);
    const [other] = await exchange(port, head(key, 'chunked') + chunked(body.replace('1', '2')), 1);
    expect(other?.status).toBe(422);
  });
});

/** One HTTP/2 POST; `length` false leaves Content-Length out. Rejects after 3 s (a loopback exchange takes milliseconds). */
function h2post(
  key: string,
  body: string,
  length: boolean,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const client = connectHttp2(`http://127.0.0.1:${h2port}`);
    client.on('error', reject);
    const timer = setTimeout(() => {
      client.destroy();
      reject(new Error('no HTTP/2 response within 3 s'));
    }, 3_000);
    const stream = client.request({
      ':method': 'POST',
      ':path': '/echo',
      'idempotency-key': key,
      'content-type': 'application/json',
      ...(length ? { 'content-length': String(Buffer.byteLength(body)) } : {}),
    });
    let status = 0;
    let text = '';
    stream.setEncoding('utf8');
    stream.on('response', (headers) => {
      status = Number(headers[':status']);
    });
    stream.on('data', (chunk: string) => {
      text += chunk;
    });
    stream.on('end', () => {
      clearTimeout(timer);
      client.close();
      resolve({ status, body: text });
    });
    stream.on('error', (error) => {
      clearTimeout(timer);
      client.destroy();
      reject(error);
    });
    stream.end(body);
  });
}

// FINDING MEDIUM (pre-existing: the same with the base's peekBody, not introduced by this
// branch): on @hono/node-server over node:http2 (`createServer: http2.createServer`), a keyed
// POST with a body never gets an answer, with or without Content-Length. peekBody waits for
// `req.complete`, which an Http2ServerRequest only turns true once its 'end' was emitted (or
// the stream closed), and peekBody never lets it end; the fast path does not apply either (the
// compat request pulls its stream's data only on the first read, so nothing is buffered yet).
// The request hangs until the client leaves ("The client went away before the request body
// was read"): unbounded time. No key is held (the body is read before the key is taken). The
// same requests without the middleware, or without a key (400), are answered at once.
describe('HTTP/2 compat requests (node-server over http2)', () => {
  it('with Content-Length: the body read whole, the retry replayed, another body 422', async () => {
    const key = freshKey();
    const body = '{"h2":"with length"}';
    const first = await h2post(key, body, true);
    expect(first.status).toBe(201);
    expect(JSON.parse(first.body).body).toBe(body);
    const again = await h2post(key, body, true);
    expect(again).toEqual(first);
    expect((await h2post(key, '{"h2":"other"}', true)).status).toBe(422);
  });

  it('without Content-Length: the body read whole, the retry replayed, another body 422', async () => {
    const key = freshKey();
    const body = '{"h2":"no length"}';
    const first = await h2post(key, body, false);
    expect(first.status).toBe(201);
    expect(JSON.parse(first.body).body).toBe(body);
    const again = await h2post(key, body, false);
    expect(again).toEqual(first);
    expect((await h2post(key, '{"h2":"other"}', false)).status).toBe(422);
  });
});
