import { once } from 'node:events';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Adversarial review (wt/httpfix-review): pipelined Fastify replies on one socket.

const runs = new Map<string, number>();
const app = Fastify({ forceCloseConnections: true });
let url = '';
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  await app.register(idempotency, {
    store: createMemoryStore(),
    scope: () => ({ principal: 'a' }),
    onWarning: () => {},
  });
  app.addHook('preHandler', async (request) => {
    runs.set(request.url, (runs.get(request.url) ?? 0) + 1);
  });
  app.post('/buffer', async (_q, reply) => {
    await wait(100);
    return reply.code(201).send(Buffer.from('buffer-body'));
  });
  app.post('/stream', async (_q, reply) =>
    reply.type('text/plain').send(
      Readable.from(
        (async function* () {
          for (let i = 0; i < 5; i++) {
            await wait(5);
            yield `s${i};`;
          }
        })(),
      ),
    ),
  );
  app.post('/string', async (_q, reply) => reply.type('text/plain').send('string-body'));
  url = await app.listen({ port: 0, host: '127.0.0.1' });
});
afterAll(() => app.close());

const post = (path: string, key: string) =>
  `POST ${path} HTTP/1.1\r\nHost: x\r\nidempotency-key: ${key}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}`;

describe('@idem/fastify httpfix review', () => {
  it('pipelined Buffer, stream, string replies (client stays): delivered, recorded once, replayed', async () => {
    const socket = connect(Number(new URL(url).port), '127.0.0.1');
    await once(socket, 'connect');
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      data += d;
    });
    socket.write(post('/buffer', 'fb') + post('/stream', 'fs') + post('/string', 'ft'));
    const deadline = Date.now() + 3_000;
    while (!data.includes('string-body') && Date.now() < deadline) await wait(10);
    socket.destroy();
    expect(data.match(/HTTP\/1.1 \d+/g)).toEqual(['HTTP/1.1 201', 'HTTP/1.1 200', 'HTTP/1.1 200']);
    for (const [path, key, body] of <[string, string, string][]>[
      ['/buffer', 'fb', 'buffer-body'],
      ['/stream', 'fs', 's0;s1;s2;s3;s4;'],
      ['/string', 'ft', 'string-body'],
    ]) {
      const retry = await send(url, path, { key, body: {} });
      expect(retry.headers['idempotent-replayed']).toBe('true');
      expect(retry.body.toString()).toBe(body);
    }
    expect(['/buffer', '/stream', '/string'].map((p) => runs.get(p))).toEqual([1, 1, 1]);
  });

  it('a retry while the first is in flight: 409 (or waits), the handler runs once', async () => {
    const [first, second] = await Promise.all([
      send(url, '/buffer', { key: 'inflight', body: {} }),
      wait(20).then(() => send(url, '/buffer', { key: 'inflight', body: {} })),
    ]);
    expect(first.status).toBe(201);
    expect([201, 409]).toContain(second.status);
    expect(runs.get('/buffer')).toBe(2); // 1 from the pipelined test + this first
  });
});
