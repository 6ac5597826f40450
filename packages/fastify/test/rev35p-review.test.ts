// rev35p: the review of wt/perf35b (see http-conformance's rev35p-kit) on Fastify.
import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import { rev35pSuite } from '../../http-conformance/test/rev35p-kit.js';
import { idempotency } from '../src/index.js';

rev35pSuite(async (store, options, answer) => {
  const app = Fastify();
  await app.register(async (scope) => {
    await scope.register(idempotency, { store, scope: 'global', ...options });
    scope.post('/r', async (req, reply) => {
      const { status, body } = answer(String(req.headers['idempotency-key']));
      return reply.code(status).type('text/plain').send(body);
    });
  });
  app.post('/plain', async (_request, reply) => reply.code(200).send('plain'));
  await app.listen({ port: 0, host: '127.0.0.1' });
  return { port: (app.server.address() as AddressInfo).port, close: () => app.close() };
});
