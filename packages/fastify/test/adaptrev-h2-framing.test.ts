// @idem/fastify over HTTP/2 (h2c): an onRequest hook that puts `Transfer-Encoding: chunked`
// on the reply. HTTP/2 has no Transfer-Encoding (a connection header): node:http2 threw at the
// head of a streamed replay, which then never ended (the client waited on an open stream).
// Every replay, streamed or whole, is sent without it, as @idem/http does for Express and Koa
// over HTTP/2 (adaptrev).
import { connect as h2Connect } from 'node:http2';
import { Readable } from 'node:stream';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

const CHUNKS = ['alpha-', 'beta-', 'gamma-', 'delta'];
let app: FastifyInstance;
let url = '';
let runs = 0;

beforeAll(async () => {
  // Typed as the default instance, as fastify-h2-live-reset does.
  app = Fastify({ http2: true }) as unknown as FastifyInstance;
  await app.register(idempotency, { store: createMemoryStore(), scope: 'global' });
  app.addHook('onRequest', async (request, reply) => {
    const framing = request.headers['x-framing'];
    if (framing === 'te') reply.header('transfer-encoding', 'chunked');
    if (framing === 'raw-te') reply.raw.setHeader('transfer-encoding', 'chunked');
  });
  app.post('/stream', async (_request, reply) => {
    runs++;
    let i = 0;
    reply.type('text/plain');
    return reply.send(
      new Readable({
        read() {
          if (i < CHUNKS.length) setTimeout(() => this.push(CHUNKS[i++]), 5);
          else this.push(null);
        },
      }),
    );
  });
  app.post('/whole', async () => {
    runs++;
    return { whole: CHUNKS.join('') };
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
});
afterAll(() => app.close());

interface H2Answer {
  status: number;
  replayed: boolean;
  body: string;
  /** The stream did not close within 2 s (a replay that never ended). */
  hung: boolean;
}

/** A keyed POST over h2c, on its own session; gives up after 2 s. */
function post(path: string, key: string, framing: string): Promise<H2Answer> {
  return new Promise((resolve) => {
    const session = h2Connect(url);
    session.on('error', () => {});
    const stream = session.request({
      ':method': 'POST',
      ':path': path,
      'idempotency-key': key,
      'content-type': 'application/json',
      'x-framing': framing,
    });
    const answer: H2Answer = { status: 0, replayed: false, body: '', hung: false };
    const timer = setTimeout(() => {
      answer.hung = true;
      stream.close();
    }, 2_000);
    stream.on('response', (head) => {
      answer.status = Number(head[':status']);
      answer.replayed = head['idempotent-replayed'] === 'true';
    });
    stream.setEncoding('utf8');
    stream.on('data', (part: string) => {
      answer.body += part;
    });
    stream.on('error', () => {});
    stream.on('close', () => {
      clearTimeout(timer);
      session.close();
      resolve(answer);
    });
    stream.end('{"a":1}');
  });
}

describe('@idem/fastify over HTTP/2: a replay carries no Transfer-Encoding a hook set', () => {
  for (const [path, expected] of [
    ['/stream', CHUNKS.join('')],
    ['/whole', JSON.stringify({ whole: CHUNKS.join('') })],
  ] as const) {
    it.each(['te', 'raw-te'])(`${path}: hook framing %s`, async (framing) => {
      const key = `adaptrev-h2-${path}-${framing}-${Math.random()}`;
      const before = runs;
      expect(await post(path, key, 'none')).toMatchObject({ status: 200, body: expected });
      expect(await post(path, key, framing)).toEqual({
        status: 200,
        replayed: true,
        body: expected,
        hung: false,
      });
      expect(runs).toBe(before + 1);
    });
  }
});
