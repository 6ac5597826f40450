import { type AddressInfo, connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev10: attacks that broke another adapter (see packages/{express,koa,hono}/test/rev10-*)
// and held on Fastify.

const apps: FastifyInstance[] = [];
const sockets: Socket[] = [];
afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await Promise.all(apps.map((app) => app.close()));
});

const CHUNKS = 1_000_000;

async function start() {
  const app = Fastify();
  apps.push(app);
  let runs = 0;
  app.addHook('onRequest', async (_request, reply) => {
    reply.header('access-control-allow-origin', 'https://app.example');
  });
  await app.register(idempotency, {
    store: createMemoryStore(),
    scope: 'global',
    onWarning: () => {},
  });
  app.post('/*', async (_request, reply) => {
    runs++;
    return reply.code(201).send({ ok: true });
  });
  app.post('/stream', async (_request, reply) => {
    runs++;
    const res = reply.raw;
    reply.hijack();
    res.writeHead(200, { 'content-type': 'text/plain' });
    for (let i = 0; i < CHUNKS; i++) {
      if (!res.write('x')) await new Promise((resolve) => res.once('drain', resolve));
      if (i % 1_000 === 999) await new Promise((resolve) => setImmediate(resolve));
    }
    res.end();
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const accepted: Socket[] = [];
  app.server.on('connection', (socket: Socket) => accepted.push(socket));
  return { port: (app.server.address() as AddressInfo).port, accepted, runs: () => runs };
}

/** A raw POST head and a 2-byte JSON body; the status line's code; 5 s bound. */
function rawStatus(port: number, target: string, key: string): Promise<number> {
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
      resolve(Number(data.split(' ')[1]));
    });
    socket.write(
      `POST ${target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nIdempotency-Key: ${key}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`,
    );
  });
}

describe('rev10 fastify (held)', () => {
  it('absolute-form targets the URL parser refuses: 400 (Fastify), nothing run', async () => {
    const { port, runs } = await start();
    for (const target of ['http://a:99999/x', 'http://a%zz/x'])
      expect(await rawStatus(port, target, 'bad-target'), target).toBe(400);
    expect(runs()).toBe(0);
  });

  it('headers an onRequest hook set (CORS) are on the replay, the 422 and the 400', async () => {
    const { port, runs } = await start();
    const post = async (key: string, body: string) => {
      const response = await fetch(`http://127.0.0.1:${port}/charges`, {
        method: 'POST',
        headers: { 'idempotency-key': key, 'content-type': 'application/json' },
        body,
        signal: AbortSignal.timeout(5_000),
      });
      await response.arrayBuffer();
      return [response.status, response.headers.get('access-control-allow-origin')];
    };
    const origin = 'https://app.example';
    expect(await post('cors', '{}')).toEqual([201, origin]);
    expect(await post('cors', '{}')).toEqual([201, origin]);
    expect(await post('cors', '{"a":1}')).toEqual([422, origin]);
    expect(await post('bad"key', '{}')).toEqual([400, origin]);
    expect(runs()).toBe(1);
  });

  it('a replay of 1,000,000 one-byte chunks to a client that does not read keeps backpressure', async () => {
    const { port, accepted, runs } = await start();
    const first = await fetch(`http://127.0.0.1:${port}/stream`, {
      method: 'POST',
      headers: { 'idempotency-key': 'many' },
      // Set-up, not a bound: 1,000,000 writes of one byte take seconds of CPU, and far longer
      // on CI's two cores at a load of 25 and more (20 s was not enough there once).
      signal: AbortSignal.timeout(60_000),
    });
    expect((await first.arrayBuffer()).byteLength).toBe(CHUNKS);
    const socket = connect(port, '127.0.0.1');
    sockets.push(socket);
    socket.on('error', () => {});
    socket.write(
      'POST /stream HTTP/1.1\r\nHost: a\r\nIdempotency-Key: many\r\nContent-Length: 0\r\n\r\n',
    );
    socket.pause();
    for (let i = 0; i < 20 && accepted.length < 2; i++) await sleep(50);
    await sleep(1_000);
    expect((accepted.at(-1) as Socket).writableLength).toBeLessThan(1_048_576);
    expect(runs()).toBe(1);
  }, 90_000);
});
