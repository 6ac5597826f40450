import { type IncomingHttpHeaders, request } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Trailers on Fastify: its own `reply.trailer` (which declares them in a `Trailer` header and
// sends them with `res.addTrailers`) and `reply.raw.addTrailers` on a hijacked response are
// recorded with the outcome; a replay sends them after the body with `reply.trailer`, whether
// it is sent whole (one chunk) or as the recorded chunks (a Web `Response` payload).

const apps: FastifyInstance[] = [];
afterAll(async () => {
  await Promise.all(apps.map((app) => app.close()));
});

async function start() {
  const app = Fastify({ forceCloseConnections: true });
  apps.push(app);
  let runs = 0;
  const warnings: string[] = [];
  await app.register(idempotency, {
    store: createMemoryStore(),
    scope: 'global',
    onWarning: (message: string) => warnings.push(message),
  });
  app.post('/whole', async (_request, reply) => {
    runs++;
    reply.type('text/plain');
    reply.trailer('x-checksum', async () => 'sha-whole');
    return reply.send('abc');
  });
  app.post('/raw', async (_request, reply) => {
    runs++;
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/plain', trailer: 'X-Checksum' });
    res.write('ab');
    await new Promise((resolve) => setImmediate(resolve));
    res.write('c');
    res.addTrailers({ 'X-Checksum': 'sha-raw', 'X-Other': 'o' });
    res.end();
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  return { port: (app.server.address() as AddressInfo).port, runs: () => runs, warnings };
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

describe('fastify: trailers', () => {
  it('reply.trailer: the replay (sent whole) carries the trailer the first client got', async () => {
    const { port, runs, warnings } = await start();
    const first = await post(port, '/whole', 'f-whole');
    expect(first.trailers).toEqual({ 'x-checksum': 'sha-whole' });
    const replay = await post(port, '/whole', 'f-whole');
    expect(replay.status).toBe(200);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.headers.trailer).toBe('x-checksum');
    expect(replay.headers['content-length']).toBeUndefined();
    expect(replay.body).toBe('abc');
    expect(replay.trailers).toEqual({ 'x-checksum': 'sha-whole' });
    expect(runs()).toBe(1);
    expect(warnings).toEqual([]);
  });

  it('raw addTrailers, a body of two chunks: the replay carries the declared trailer', async () => {
    const { port, runs, warnings } = await start();
    const first = await post(port, '/raw', 'f-raw');
    expect(first.trailers).toEqual({ 'x-checksum': 'sha-raw', 'x-other': 'o' });
    const replay = await post(port, '/raw', 'f-raw');
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toBe('abc');
    expect(replay.trailers).toEqual({ 'x-checksum': 'sha-raw' });
    expect(
      warnings.filter((w) => /Trailer field\(s\) x-other .* not recorded/.test(w)),
    ).toHaveLength(1);
    expect(runs()).toBe(1);
  });

  it('an HTTP/1.0 client gets the replay without trailers, its body whole', async () => {
    const { port, runs } = await start();
    await post(port, '/whole', 'f-old');
    const answer = await raw10(port, '/whole', 'f-old');
    expect(answer).toContain('idempotent-replayed: true');
    expect(answer).not.toMatch(/trailer|x-checksum|chunked/i);
    expect(answer.endsWith('\r\n\r\nabc')).toBe(true);
    expect(runs()).toBe(1);
  });
});
