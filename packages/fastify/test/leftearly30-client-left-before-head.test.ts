import { describeLeftBeforeHead, leftBeforeHeadProbe } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, describe, it } from 'vitest';
import { type FastifyIdempotencyOptions, idempotency } from '../src/index.js';

// leftearly30 FINDING (HIGH, exactly-once; fixed in @idem/http's recorder): a client that left
// before the head while the route still worked (its own timeout during a slow call longer than
// the lease) had its retry run the route a second time once two leases passed (409, 409, 409,
// 201). A response whose head has not started is a handler still working: its lease is renewed
// as for a client that stays (up to maxHoldMs); retries get 409, then the replay.
// And past the head: a route that wrote its head itself (`reply.raw`, `reply.hijack()`) and
// still works is not a stuck body either: the plugin holds the key while the route's handler
// runs (the recorder's `holdWhile`, as Koa's `next()`), where it was freed after two leases.

const LEASE = 300;

async function start(
  probe: ReturnType<typeof leftBeforeHeadProbe>,
  store: FastifyIdempotencyOptions['store'],
  h2 = false,
) {
  const app: FastifyInstance = h2
    ? (Fastify({ http2: true }) as unknown as FastifyInstance)
    : Fastify({ forceCloseConnections: true });
  await app.register(idempotency, { store, scope: 'global', leaseMs: LEASE });
  app.post('/jobs', async (_request, reply) => {
    const run = await probe.work();
    return reply.code(201).send({ run });
  });
  for (const hijack of [false, true]) {
    app.post(hijack ? '/hijacked' : '/raw', async (_request, reply) => {
      const run = probe.begin();
      if (hijack) reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'text/plain' });
      reply.raw.write(`begun ${run}.`);
      await probe.held(run);
      reply.raw.end('done');
      return reply;
    });
  }
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return { url, close: () => app.close() };
}

describeLeftBeforeHead(
  'leftearly30 fastify: the client leaves before the head while the route still works',
  LEASE,
  start,
  { http2: true },
);

describe('leftearly30 fastify: the client leaves after the head while the route still works', () => {
  const closers: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const close of closers) await close();
  });
  for (const path of ['/raw', '/hijacked']) {
    it(`${path}: 409 until the route ends, then the replay; run once`, async () => {
      const probe = leftBeforeHeadProbe(LEASE);
      const app = await start(probe, createMemoryStore());
      closers.push(app.close);
      await probe.checkAfterHead(app.url, path);
    });
  }
});
