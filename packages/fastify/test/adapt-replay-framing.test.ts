// @idem/fastify: a hook (`onRequest`) that puts a framing header on the reply before the
// plugin answers. A replay (streamed or whole), read off a raw socket, is framed by its own
// body: never the hook's Content-Length beside a body of another length, never both
// Content-Length and Transfer-Encoding (RFC 9112 6.3: a desync or a hung client)
// (adapt-left N3, as @idem/nestjs on Fastify already did).
import { Readable } from 'node:stream';
import { rawFraming, rawIsReplay, rawPost } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

const CHUNKS = ['alpha-', 'beta-', 'gamma-', 'delta'];
let app: FastifyInstance;
let url = '';
let runs = 0;

beforeAll(async () => {
  app = Fastify();
  await app.register(idempotency, { store: createMemoryStore(), scope: 'global' });
  app.addHook('onRequest', async (request, reply) => {
    const framing = request.headers['x-framing'];
    if (framing === 'cl') reply.header('content-length', '3');
    if (framing === 'cl-big') reply.header('content-length', '100000');
    if (framing === 'te') reply.header('transfer-encoding', 'chunked');
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

const post = (path: string, key: string, framing: string) =>
  rawPost(url, path, key, '{"a":1}', `X-Framing: ${framing}\r\n`);

describe('@idem/fastify: a replay is framed by its own body whatever a hook set', () => {
  for (const [path, expected] of [
    ['/stream', CHUNKS.join('')],
    ['/whole', JSON.stringify({ whole: CHUNKS.join('') })],
  ] as const) {
    it.each(['cl', 'cl-big', 'te'])(`${path}: hook framing %s`, async (framing) => {
      const key = `n3-fastify-${path}-${framing}-${Math.random()}`;
      const before = runs;
      expect(rawFraming(await post(path, key, 'none'))).toMatchObject({
        body: expected,
        exact: true,
      });
      const replay = await post(path, key, framing);
      expect(rawIsReplay(replay)).toBe(true);
      const framed = rawFraming(replay);
      // Never both; a streamed replay keeps chunked framing (a break stays visible).
      expect(framed.framing).toBe(path === '/stream' ? 'chunked' : 'content-length');
      expect(framed).toMatchObject({ body: expected, exact: true });
      expect(runs).toBe(before + 1);
    });
  }
});
