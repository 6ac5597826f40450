import { describeOuterTimeout } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { idempotency } from '../src/index.js';

// timeout31 FINDING (MEDIUM-HIGH, exactly-once; fixed): a request timeout outside idem (an
// `onRequest` hook whose timer replies 503) answered while the route handler still ran. The
// recorder saw a response that is not final end and released the key at once: a retry sent
// after the 503 ran the handler a second time beside the first. Now the key stays held (409 to
// retries) until the handler settled (Fastify ignores what a handler returns once the reply was
// sent: its own outcome is not known).
// timeout31b FINDING (MEDIUM-HIGH, exactly-once; fixed): the key was then released, so a later
// retry ran the handler a second time (after it) though it had run to its end. Now a handler
// that ran to its end leaves the `answered_outside` not-recorded marker (retries get a 500
// outcome-not-recorded problem); one that threw is still released (a retry runs it).

const LEASE = 300;

describeOuterTimeout(
  'timeout31 fastify: a hook outside idem replies 503 while the handler runs',
  LEASE,
  async (probe) => {
    const app = Fastify({ logger: false });
    app.addHook('onRequest', (_request, reply, done) => {
      const timer = setTimeout(() => {
        if (!reply.sent) void reply.code(503).send('timed out');
      }, 100);
      reply.raw.once('close', () => clearTimeout(timer));
      done();
    });
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: 'global',
      leaseMs: LEASE,
    });
    app.post('/charges', async (_request, reply) => {
      const run = await probe.work();
      reply.code(201);
      return { run };
    });
    app.post('/fails', async (_request, reply) => {
      const run = await probe.workOrThrow();
      reply.code(201);
      return { run };
    });
    app.post('/own', async (_request, reply) => {
      reply.code(503);
      return { own: true };
    });
    return { url: await app.listen({ port: 0, host: '127.0.0.1' }), close: () => app.close() };
  },
  { timeoutStatus: 503, replay: false },
);
