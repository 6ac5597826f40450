import { listening, postGot } from '@idem/http-conformance';
import Fastify from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { registerGlobalIdem } from './support/global-idem.js';

// fprev23 (see packages/http/test/fprev23-review.test.ts): what the fix of the media type's
// U+00A0 costs under Fastify, on a real app on loopback.

const closers: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const close of closers.splice(0)) await close();
});

describe('fprev23 fastify: U+00A0 after the media type', () => {
  // FINDING LOW (kept; a 422, never a replay; made by the fix of a HIGH): Fastify cuts a
  // media type with String#trimEnd, so it parses `application/json\u00a0` as JSON and its route
  // reads it as `application/json`; idem now fingerprints the U+00A0 as part of the type, so a
  // retry that drops it gets 422. Correct for Fastify would be a replay. Not fixed: before the
  // parsers nothing tells which reads the request, and type-is (Express, Koa, NestJS on
  // Express) leaves such a body unparsed (a replay there is the HIGH of
  // packages/express/test/fprev23-review.test.ts). Workaround: a client sends one Content-Type
  // for all tries of a key (packages/http README).
  it.fails('LOW: `application/json\\u00a0` then `application/json`, both read as JSON by Fastify: replayed', async () => {
    const app = Fastify();
    await registerGlobalIdem(app);
    let runs = 0;
    app.post('/x', async (request, reply) => {
      runs++;
      return reply.code(201).send({ got: request.body ?? null });
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const running = await listening(app.server);
    closers.push(() => app.close());
    const post = (contentType: string) =>
      postGot(running.url, '/x', 'k-fastify-nbsp', Buffer.from('{"amount":5}'), contentType);
    expect(await post('application/json\u00a0')).toEqual({
      status: 201,
      replayed: false,
      got: { amount: 5 },
    });
    const retry = await post('application/json');
    expect([retry.status, retry.replayed, runs]).toEqual([201, true, 1]);
  });
});
