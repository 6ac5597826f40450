import {
  type ClientHttp2Session,
  connect as http2Connect,
  constants as http2Constants,
  type IncomingHttpHeaders,
} from 'node:http2';
import { Readable } from 'node:stream';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Adversarial review of wt/harden9 through Fastify's `http2: true` (node:http2 compat): header
// values a client drops (a space at an end, one bad value of an array) and a client reset
// while a stream reply is written, with a real node:http2 client.

const closers: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

async function serve(setup: (app: FastifyInstance, runs: () => number) => void) {
  const app = Fastify({ http2: true }) as unknown as FastifyInstance;
  let runs = 0;
  app.addHook('onRequest', async () => {
    runs++;
  });
  await app.register(idempotency, {
    store: createMemoryStore(),
    scope: 'global',
    recordedHeaders: ['content-type', 'cache-control', 'x-list', 'x-lead'],
    onWarning: () => {},
    leaseMs: 300,
    maxHoldMs: 900,
  });
  let executions = 0;
  setup(app, () => ++executions);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const client = http2Connect(
    `http://127.0.0.1:${(app.server.address() as { port: number }).port}`,
  );
  client.on('error', () => {});
  closers.push(() => app.close());
  closers.push(() => client.destroy());
  return { client, executions: () => executions, requests: () => runs };
}

function post(client: ClientHttp2Session, path: string, key: string, reset = false) {
  return new Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>(
    (resolve, reject) => {
      const stream = client.request({
        ':method': 'POST',
        ':path': path,
        'content-type': 'application/json',
        'idempotency-key': key,
      });
      let headers: IncomingHttpHeaders = {};
      const parts: Buffer[] = [];
      stream.on('response', (got) => {
        headers = got;
      });
      stream.on('data', (chunk: Buffer) => {
        parts.push(chunk);
        if (reset) stream.close(http2Constants.NGHTTP2_CANCEL);
      });
      const done = () =>
        resolve({
          status: Number(headers[':status']),
          headers,
          body: Buffer.concat(parts).toString(),
        });
      stream.on('end', done);
      stream.on('close', done);
      stream.on('error', reset ? () => {} : reject);
      stream.end('{"amount":1}');
    },
  );
}

const head = (headers: IncomingHttpHeaders) => {
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(headers))
    if (!name.startsWith(':') && !['date', 'content-length', 'idempotent-replayed'].includes(name))
      out[name] = value;
  return out;
};

describe('fastify http2 review', () => {
  it("reply.header values with a space at an end, and an array with one: the replay's head equals the first's", async () => {
    const h = await serve((app, run) => {
      app.post('/charges', async (_request, reply) => {
        run();
        reply
          .code(201)
          .header('cache-control', 'no-store ')
          .header('x-lead', ' lead')
          .header('x-list', ['a', ' b', 'c']);
        return { ok: true };
      });
    });
    const first = await post(h.client, '/charges', 'k');
    const replay = await post(h.client, '/charges', 'k');
    expect(first.status).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(first.headers['cache-control']).toBeUndefined();
    expect(head(replay.headers)).toEqual(head(first.headers));
    expect(replay.body).toBe(first.body);
    expect(h.executions()).toBe(1);
  });

  it('a stream reply the client resets after its first chunk: read on to its end, recorded, replayed whole', async () => {
    const h = await serve((app, run) => {
      app.post('/stream', async (_request, reply) => {
        run();
        reply.header('content-type', 'text/plain');
        async function* parts() {
          yield 'one,';
          await new Promise((resolve) => setTimeout(resolve, 20));
          yield 'two,';
          yield 'three';
        }
        return reply.send(Readable.from(parts(), { objectMode: false }));
      });
    });
    await post(h.client, '/stream', 'k', true);
    let retry = await post(h.client, '/stream', 'k');
    for (let i = 0; retry.status === 409 && i < 150; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      retry = await post(h.client, '/stream', 'k');
    }
    expect(retry.body).toBe('one,two,three');
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(h.executions()).toBe(1);
  });
});
