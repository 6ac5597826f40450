import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import {
  type ClientHttp2Session,
  createServer,
  type Http2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  connect as http2Connect,
  constants as http2Constants,
  type IncomingHttpHeaders,
} from 'node:http2';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createMemoryStore } from '@idem/store-memory';
import type { NextFunction, Request, Response } from 'express';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Express 5 does not serve HTTP/2: as the handler of a node:http2 server it swaps the
// prototypes of the compat request and response for its own (node:http ones) and fails
// before any middleware runs. What can reach the middleware is node:http2's compat
// request and response as they are, with what Express adds (`originalUrl`, `locals`), as
// an HTTP/2 bridge presents them: the middleware then records and replays over HTTP/2 as
// over HTTP/1.1, the body of a request without a Content-Length included.

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

const servers: Http2Server[] = [];
const sessions: ClientHttp2Session[] = [];
afterEach(() => {
  for (const session of sessions.splice(0)) session.destroy();
});
afterAll(() =>
  Promise.all(
    servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
  ),
);

type Route = (req: Http2ServerRequest, res: Http2ServerResponse, body: string) => unknown;

/** A node:http2 server running the middleware, then `route` with the body it read itself. */
function bridged(route: Route): Promise<ClientHttp2Session> {
  const middleware = idempotency({
    store: createMemoryStore(),
    scope: 'global',
    onWarning: () => {},
  });
  const server = createServer((req, res) => {
    Object.assign(req, { originalUrl: req.url });
    Object.assign(res, { locals: {} });
    const next: NextFunction = (error?: unknown) => {
      if (error) {
        res.statusCode = 500;
        res.end();
        return;
      }
      const parts: Buffer[] = [];
      req.on('data', (chunk: Buffer) => parts.push(chunk));
      req.on('end', () => route(req, res, Buffer.concat(parts).toString()));
    };
    void middleware(req as unknown as Request, res as unknown as Response, next);
  });
  servers.push(server);
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const client = http2Connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
      client.on('error', () => {});
      sessions.push(client);
      resolve(client);
    });
  });
}

function post(client: ClientHttp2Session, key: string, body: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    // No Content-Length: HTTP/2 frames the body.
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
  });
}

describe('@idem/express given node:http2 compat request and response', () => {
  it('records and replays; another body is 422; a concurrent duplicate is 409', async () => {
    let runs = 0;
    const entered = deferred();
    const release = deferred();
    const client = await bridged(async (_req, res, body) => {
      const run = ++runs;
      const { amount } = JSON.parse(body) as { amount: number };
      if (amount === 9) {
        entered.resolve();
        await release.promise;
      }
      res.statusCode = 201;
      res.setHeader('Content-Type', 'application/json');
      res.setHeader('ETag', `"${run}"`);
      res.end(JSON.stringify({ run, amount }));
    });
    const first = await post(client, 'k1', '{"amount":5}');
    expect(first.status).toBe(201);
    expect(JSON.parse(first.body)).toEqual({ run: 1, amount: 5 });
    const retry = await post(client, 'k1', '{"amount":5}');
    expect(retry.status).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.headers.etag).toBe('"1"');
    expect(retry.body).toBe(first.body);
    // The body is part of the fingerprint though no Content-Length declares it.
    expect((await post(client, 'k1', '{"amount":6}')).status).toBe(422);

    const slow = post(client, 'k2', '{"amount":9}');
    await entered.promise;
    expect((await post(client, 'k2', '{"amount":9}')).status).toBe(409);
    release.resolve();
    expect((await slow).status).toBe(201);
    expect(runs).toBe(2);
  });
});

// `res.sendFile` is the `send` module piping a file into the response, stopped by on-finished,
// which listens on `res.socket`: over HTTP/2 node:http2's proxy of the stream, whose 'close'
// a client reset brings. As over HTTP/1.1 (express-send-file.test.ts) the file must still be
// read to its end, recorded once, and replayed to the retry.
describe('@idem/express given node:http2, the `send` module (res.sendFile) and a client reset', () => {
  const send = createRequire(createRequire(import.meta.url).resolve('express'))('send') as (
    req: Http2ServerRequest,
    path: string,
  ) => { pipe(res: Http2ServerResponse): void; on(event: string, listener: () => void): void };

  it('the file is read to its end while the client is gone: recorded once, the retry replays it', async () => {
    // Past the stream's flow-control window: the client resets while the file streams.
    const file = randomBytes(3 * 1024 * 1024);
    const dir = mkdtempSync(join(tmpdir(), 'idem-h2-send-'));
    const path = join(dir, 'receipt.bin');
    writeFileSync(path, file);
    try {
      let runs = 0;
      let readToEnd = false;
      const client = await bridged((req, res) => {
        runs++;
        const sending = send(req, path);
        // Never when on-finished stopped the file stream (the client left first, as it saw).
        sending.on('end', () => {
          readToEnd = true;
        });
        sending.pipe(res);
      });
      const firstOut = deferred();
      const closed = deferred();
      const stream = client.request({
        ':method': 'POST',
        ':path': '/receipt',
        'idempotency-key': 'file',
      });
      stream.on('error', () => {});
      stream.once('data', () => firstOut.resolve());
      stream.on('close', () => closed.resolve());
      stream.end();
      await firstOut.promise;
      stream.close(http2Constants.NGHTTP2_CANCEL);
      await closed.promise;
      let retry = await fetchAll(client, 'file');
      for (let i = 0; retry.status === 409 && i < 100; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        retry = await fetchAll(client, 'file');
      }
      expect(retry.status).toBe(200);
      expect(retry.headers['idempotent-replayed']).toBe('true');
      expect(retry.body.equals(file)).toBe(true);
      expect(runs).toBe(1);
      expect(readToEnd).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function fetchAll(
  client: ClientHttp2Session,
  key: string,
): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const request = client.request({
      ':method': 'POST',
      ':path': '/receipt',
      'idempotency-key': key,
    });
    let headers: IncomingHttpHeaders = {};
    const parts: Buffer[] = [];
    request.on('response', (h) => {
      headers = h;
    });
    request.on('data', (chunk: Buffer) => parts.push(chunk));
    request.on('end', () =>
      resolve({ status: Number(headers[':status']), headers, body: Buffer.concat(parts) }),
    );
    request.on('error', reject);
    request.end();
  });
}
