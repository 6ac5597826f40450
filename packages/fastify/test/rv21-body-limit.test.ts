// rv21 (adversarial review of 4d4461b..642f445): Fastify's own bodyLimit 413 to a keyed request on
// an idempotent route is answered as the body-too-large problem (a route onSend hook). Attacks:
// can it rewrite an answer of the app's own (an error handler, a hook, a handler), one of a
// route with idempotency off, one to a request without a key? Real Fastify apps on loopback.
import { PROBLEM_TYPES } from '@idem/http';
import { json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

const big = () => Buffer.from(JSON.stringify({ pad: 'p'.repeat(2 * 1024 * 1024) }));
const jsonType = { 'content-type': 'application/json' };
const MARK = 'FST_ERR_CTP_BODY_TOO_LARGE';

describe('rv21 @idem/fastify body-limit problem: only Fastify own 413 is rewritten', () => {
  let app: FastifyInstance;
  let url = '';
  let runs = 0;
  beforeAll(async () => {
    app = Fastify();
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
    });
    app.post('/plain', async () => ({ ran: ++runs }));
    // A handler that answers a 413 of its own that names the same code.
    app.post('/handler-413', async (_request, reply) =>
      reply.code(413).send({ code: MARK, message: 'the handler says: too many items' }),
    );
    // An app's hook that answers before the plugin's preHandler, with the same code.
    app.post(
      '/hook-413',
      {
        preValidation: async (_request, reply) =>
          reply.code(413).send({ code: MARK, message: 'quota: upload at /uploads' }),
      },
      async () => ({ ran: ++runs }),
    );
    await app.register(async (scoped) => {
      // An app's error handler answering JSON that carries Fastify's code with its own words.
      scoped.setErrorHandler((error, _request, reply) => {
        void reply.code(413).send({
          code: (error as { code?: string }).code,
          message: 'Files go to /uploads (max 1 MiB here)',
          docs: 'https://example.test/limits',
        });
      });
      scoped.post('/json-handler', async () => ({ ran: ++runs }));
    });
    app.post('/off', { config: { idempotency: false } }, async () => ({ ran: ++runs }));
    url = await app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(() => app.close());

  it("Fastify's own 413 to a keyed request is the problem (the change under review holds)", async () => {
    const x = await send(url, '/plain', { key: 'rv21-plain', body: big(), headers: jsonType });
    expect(x.status).toBe(413);
    expect(json(x)).toMatchObject({ type: PROBLEM_TYPES.bodyTooLarge, status: 413 });
    expect(Number(x.headers['content-length'])).toBe(x.body.length);
    expect(runs).toBe(0);
  });

  // FINDING (LOW): the onSend hook recognised Fastify's answer by a substring of its payload
  // (`"code":"FST_ERR_CTP_BODY_TOO_LARGE"`), so an app error handler that answers JSON naming
  // the error's code (with its own message and fields) lost its answer to the problem, against
  // the README's "an app's own error handler keeps its answer". Fixed: only a payload that is
  // Fastify's error serialisation (statusCode, code, error, message; nothing else) is rewritten.
  it("an app error handler's JSON that names Fastify's code keeps its answer", async () => {
    const x = await send(url, '/json-handler', {
      key: 'rv21-json',
      body: big(),
      headers: jsonType,
    });
    expect(x.status).toBe(413);
    expect(json(x)).toEqual({
      code: MARK,
      message: 'Files go to /uploads (max 1 MiB here)',
      docs: 'https://example.test/limits',
    });
  });

  // FINDING (LOW, same cause): an app hook's own 413 JSON naming the code was rewritten too.
  it("an app hook's own 413 naming the code (before the plugin ran) keeps its answer", async () => {
    const x = await send(url, '/hook-413', { key: 'rv21-hook', body: { a: 1 } });
    expect(x.status).toBe(413);
    expect(json(x)).toEqual({ code: MARK, message: 'quota: upload at /uploads' });
  });

  it("a handler's own 413 under a key is its answer, not the problem", async () => {
    const x = await send(url, '/handler-413', { key: 'rv21-handler', body: { a: 1 } });
    expect(x.status).toBe(413);
    expect(json(x)).toEqual({ code: MARK, message: 'the handler says: too many items' });
  });

  it("no key, or idempotency off: Fastify's own 413 stays", async () => {
    for (const x of [
      await send(url, '/plain', { body: big(), headers: jsonType }),
      await send(url, '/off', { key: 'rv21-off', body: big(), headers: jsonType }),
    ]) {
      expect(x.status).toBe(413);
      expect(json(x)).toMatchObject({ code: MARK });
    }
  });

  it('after the problem, the same key with a body that fits runs once and then replays', async () => {
    const key = 'rv21-after';
    expect((await send(url, '/plain', { key, body: big(), headers: jsonType })).status).toBe(413);
    const a = await send(url, '/plain', { key, body: { a: 1 } });
    const b = await send(url, '/plain', { key, body: { a: 1 } });
    expect(a.status).toBe(200);
    expect(b.headers['idempotent-replayed']).toBe('true');
    expect(b.body.equals(a.body)).toBe(true);
  });
});
