import type { IncomingHttpHeaders, Server } from 'node:http';
import { request } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { Readable } from 'node:stream';
import { createMemoryStore } from '@idem/store-memory';
import Koa from 'koa';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Trailers on Koa (`ctx.res.addTrailers`, declared in a `Trailer` header): recorded with the
// outcome and replayed after the body (chunked); an undeclared one is named in a warning and
// not replayed; an HTTP/1.0 client gets the replay without trailers.

const servers: Server[] = [];
afterAll(() =>
  Promise.all(
    servers.map(
      (server) =>
        new Promise((resolve) => {
          server.closeAllConnections();
          server.close(resolve);
        }),
    ),
  ),
);

async function start() {
  let runs = 0;
  const warnings: string[] = [];
  const app = new Koa();
  app.silent = true;
  app.use(
    idempotency({
      store: createMemoryStore(),
      scope: 'global',
      onWarning: (m) => warnings.push(m),
    }),
  );
  app.use((ctx) => {
    runs++;
    ctx.set('Trailer', 'X-Checksum');
    ctx.type = 'text/plain';
    const body = Readable.from(['ab', 'c'], { objectMode: false });
    // Added once the body is read, before Koa's pipe ends the response.
    body.on('end', () => ctx.res.addTrailers({ 'X-Checksum': 'sha-abc', 'X-Debug': ctx.path }));
    ctx.body = body;
  });
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return { port: (server.address() as AddressInfo).port, runs: () => runs, warnings };
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  trailers: NodeJS.Dict<string>;
}

/** A POST to `path` with `key` through node:http's client, which reads trailers; 5 s bound. */
function post(port: number, path: string, key: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, method: 'POST', path, headers: { 'idempotency-key': key } },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (chunk: Buffer) => parts.push(chunk));
        res.on('end', () => {
          clearTimeout(timer);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(parts).toString('latin1'),
            trailers: res.trailers,
          });
        });
      },
    );
    const timer = setTimeout(() => req.destroy(new Error('no answer within 5 s')), 5_000);
    req.on('error', reject);
    req.end();
  });
}

/** The whole raw answer to an HTTP/1.0 POST (the server closes); 5 s bound. */
function raw10(port: number, path: string, key: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const timer = setTimeout(() => socket.destroy(new Error('no answer within 5 s')), 5_000);
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      data += chunk;
    });
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
    socket.write(`POST ${path} HTTP/1.0\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\n\r\n`);
  });
}

describe('koa: trailers', () => {
  it('the replay carries the declared trailer the first client got, after the same body', async () => {
    const { port, runs, warnings } = await start();
    const first = await post(port, '/export', 'koa-trailer');
    expect(first.trailers).toEqual({ 'x-checksum': 'sha-abc', 'x-debug': '/export' });
    const replay = await post(port, '/export', 'koa-trailer');
    expect(replay.status).toBe(200);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.headers.trailer).toBe('x-checksum');
    expect(replay.headers['transfer-encoding']).toBe('chunked');
    expect(replay.body).toBe('abc');
    // The undeclared one is not recorded, and the warning says so.
    expect(replay.trailers).toEqual({ 'x-checksum': 'sha-abc' });
    expect(
      warnings.filter((w) => /Trailer field\(s\) x-debug .* not recorded/.test(w)),
    ).toHaveLength(1);
    expect(runs()).toBe(1);
  });

  it('an HTTP/1.0 client gets the replay without trailers, its body whole', async () => {
    const { port, runs } = await start();
    await post(port, '/export', 'koa-old');
    const answer = await raw10(port, '/export', 'koa-old');
    expect(answer).toContain('idempotent-replayed: true');
    expect(answer).not.toMatch(/trailer|x-checksum|chunked/i);
    expect(answer.endsWith('\r\n\r\nabc')).toBe(true);
    expect(runs()).toBe(1);
  });
});
