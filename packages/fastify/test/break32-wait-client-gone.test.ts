import { describeWaitClientGone, WAIT_CLIENT_GONE_WAIT } from '@idem/http-conformance';
import Fastify from 'fastify';
import { idempotency } from '../src/index.js';

// break32 FINDING (LOW-MEDIUM, bounded time; fixed): under `wait`, a duplicate whose client
// left while it waited in preHandler went on polling the store until `wait.timeoutMs` (the
// plugin gave begin() no signal): see express's test of the same name. The reply of a client
// that left is hijacked: the route never runs for it.

describeWaitClientGone(
  'break32 fastify: a client that leaves during a bounded wait',
  async (probe, store) => {
    const app = Fastify({ forceCloseConnections: true });
    await app.register(idempotency, { store, scope: 'global', wait: WAIT_CLIENT_GONE_WAIT });
    app.post('/charges', async (_request, reply) => {
      const run = await probe.work();
      reply.code(201);
      return { run };
    });
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    return { url, close: () => app.close() };
  },
  { pipelined: true },
);
