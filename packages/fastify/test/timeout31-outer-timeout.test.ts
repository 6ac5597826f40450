import { outerTimeoutProbe, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// timeout31 FINDING (MEDIUM-HIGH, exactly-once; fixed): a request timeout outside idem (an
// `onRequest` hook whose timer replies 503) answered while the route handler still ran. The
// recorder saw a response that is not final end and released the key at once: a retry sent
// after the 503 ran the handler a second time beside the first. Now the key stays held (409 to
// retries) until the handler settled.

const LEASE = 300;
const closers: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of closers) await close();
});

async function start(probe: ReturnType<typeof outerTimeoutProbe>) {
  const app = Fastify({ logger: false });
  app.addHook('onRequest', (_request, reply, done) => {
    const timer = setTimeout(() => {
      if (!reply.sent) void reply.code(503).send('timed out');
    }, 100);
    reply.raw.once('close', () => clearTimeout(timer));
    done();
  });
  await app.register(idempotency, { store: createMemoryStore(), scope: 'global', leaseMs: LEASE });
  app.post('/charges', async (_request, reply) => {
    const run = await probe.work();
    reply.code(201);
    return { run };
  });
  app.post('/own', async (_request, reply) => {
    reply.code(503);
    return { own: true };
  });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  closers.push(() => app.close());
  return url;
}

describe('timeout31 fastify: a hook outside idem replies 503 while the handler runs', () => {
  it('retries after the 503 get 409 while the handler runs; it never runs twice at once', async () => {
    const probe = outerTimeoutProbe(LEASE);
    await probe.check(await start(probe), '/charges', 503, false);
  });

  it("the handler's own 503 (nothing running any more) still releases the key", async () => {
    const url = await start(outerTimeoutProbe(LEASE));
    for (let i = 0; i < 2; i += 1) {
      const answer = await send(url, '/own', { key: 'own-1', body: { a: 1 } });
      expect([answer.status, answer.headers['idempotent-replayed']]).toEqual([503, undefined]);
    }
  });
});
