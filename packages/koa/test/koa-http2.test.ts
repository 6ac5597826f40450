import {
  type ClientHttp2Session,
  createServer,
  type Http2Server,
  connect as http2Connect,
  type IncomingHttpHeaders,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import { bodyParser } from '@koa/bodyparser';
import Koa from 'koa';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Koa serves node:http2 as it is (`http2.createServer(app.callback())`): keyed requests over
// h2c, a body without a Content-Length (HTTP/2 frames it) fingerprinted all the same.

const servers: Http2Server[] = [];
const sessions: ClientHttp2Session[] = [];
afterAll(async () => {
  for (const session of sessions) session.destroy();
  await Promise.all(
    servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
  );
});

function post(client: ClientHttp2Session, key: string, body: string) {
  return new Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>(
    (resolve, reject) => {
      const request = client.request({
        ':method': 'POST',
        ':path': '/charges',
        'content-type': 'application/json',
        'idempotency-key': key,
      });
      let headers: IncomingHttpHeaders = {};
      const parts: Buffer[] = [];
      request.on('response', (h) => {
        headers = h;
      });
      request.on('data', (chunk: Buffer) => parts.push(chunk));
      request.on('end', () =>
        resolve({
          status: Number(headers[':status']),
          headers,
          body: Buffer.concat(parts).toString(),
        }),
      );
      request.on('error', reject);
      request.end(body);
    },
  );
}

describe('@idem/koa over HTTP/2 (h2c)', () => {
  it('first execution, replay, 422 for another body', async () => {
    const app = new Koa();
    app.silent = true;
    app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
    app.use(bodyParser());
    let runs = 0;
    app.use(async (ctx) => {
      runs++;
      ctx.status = 201;
      ctx.set('ETag', `"${runs}"`);
      ctx.body = { runs, body: ctx.request.body };
    });
    const server = createServer(app.callback());
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = http2Connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    client.on('error', () => {});
    sessions.push(client);

    const first = await post(client, 'k1', '{"a":1}');
    expect(first.status).toBe(201);
    expect(JSON.parse(first.body)).toEqual({ runs: 1, body: { a: 1 } });
    const retry = await post(client, 'k1', '{"a":1}');
    expect(retry.status).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.headers.etag).toBe('"1"');
    expect(retry.body).toBe(first.body);
    expect((await post(client, 'k1', '{"a":2}')).status).toBe(422);
    expect(runs).toBe(1);
  });
});
