// @idem/fastify: a hook (`onRequest`) that puts a framing header on the reply before the
// plugin answers. A replay (streamed or whole), read off a raw socket, is framed by its own
// body: never the hook's Content-Length beside a body of another length, never both
// Content-Length and Transfer-Encoding (RFC 9112 6.3: a desync or a hung client)
// (adapt-left N3, as @idem/nestjs on Fastify already did).
import { Readable } from 'node:stream';
import { h2Post, rawFraming, rawIsReplay, rawPost } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

const CHUNKS = ['alpha-', 'beta-', 'gamma-', 'delta'];
let app: FastifyInstance;
let h2App: FastifyInstance;
let url = '';
let h2Url = '';
let runs = 0;

/** An app with the plugin, a hook that frames by `X-Framing`, and a streamed and a whole route. */
async function framingApp(http2: boolean): Promise<[FastifyInstance, string]> {
  // Over HTTP/2 typed as the default instance, as fastify-h2-live-reset does.
  const instance = http2 ? (Fastify({ http2: true }) as unknown as FastifyInstance) : Fastify();
  await instance.register(idempotency, { store: createMemoryStore(), scope: 'global' });
  instance.addHook('onRequest', async (request, reply) => {
    const framing = request.headers['x-framing'];
    if (framing === 'cl') reply.header('content-length', '3');
    if (framing === 'cl-big') reply.header('content-length', '100000');
    if (framing === 'te') reply.header('transfer-encoding', 'chunked');
    if (framing === 'raw-te') reply.raw.setHeader('transfer-encoding', 'chunked');
  });
  instance.post('/stream', async (_request, reply) => {
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
  instance.post('/whole', async () => {
    runs++;
    return { whole: CHUNKS.join('') };
  });
  await instance.listen({ port: 0, host: '127.0.0.1' });
  return [instance, `http://127.0.0.1:${(instance.server.address() as { port: number }).port}`];
}

beforeAll(async () => {
  [app, url] = await framingApp(false);
  [h2App, h2Url] = await framingApp(true);
});
afterAll(() => Promise.all([app.close(), h2App.close()]));

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

// Over HTTP/2 (h2c) a Transfer-Encoding is a connection header: node:http2 threw at the head
// of a streamed replay, which then never ended (the client waited on an open stream). Every
// replay is sent without it, as @idem/http does for Express and Koa over HTTP/2 (adaptrev).
/** A keyed POST over h2c, on its own session; gives up after 2 s (`hung`). */
async function postH2(path: string, key: string, framing: string) {
  const answer = await h2Post(h2Url, path, key, { 'x-framing': framing }, 2_000);
  const replayed = answer.headers['idempotent-replayed'] === 'true';
  return { status: answer.status, replayed, body: answer.body, hung: answer.hung };
}

describe('@idem/fastify over HTTP/2: a replay carries no Transfer-Encoding a hook set', () => {
  for (const [path, expected] of [
    ['/stream', CHUNKS.join('')],
    ['/whole', JSON.stringify({ whole: CHUNKS.join('') })],
  ] as const) {
    it.each(['te', 'raw-te'])(`${path}: hook framing %s`, async (framing) => {
      const key = `adaptrev-h2-${path}-${framing}-${Math.random()}`;
      const before = runs;
      expect(await postH2(path, key, 'none')).toMatchObject({ status: 200, body: expected });
      expect(await postH2(path, key, framing)).toEqual({
        status: 200,
        replayed: true,
        body: expected,
        hung: false,
      });
      expect(runs).toBe(before + 1);
    });
  }
});
