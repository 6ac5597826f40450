// Bench server for @idem/http's bench/run.mjs: the README's app twice, without and with
// the plugin, on two loopback ports (printed as one JSON line).
import { idempotency } from '@idem/fastify';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';

async function app(withIdempotency) {
  const app = Fastify();
  app.addHook('onRequest', async (request, reply) => {
    const account = request.headers['x-account-id'];
    if (typeof account !== 'string') return reply.code(401).send({ error: 'unauthenticated' });
  });
  if (withIdempotency) {
    await app.register(idempotency, {
      store: createMemoryStore({
        maxEntries: 1_000_000,
        maxBytes: 2 ** 30,
        sweepIntervalMs: 1_000,
      }),
      retentionMs: 10_000,
      scope: (request) => ({ principal: request.headers['x-account-id'] }),
    });
  }
  let next = 1;
  app.post('/charges', async (request, reply) =>
    reply.code(201).send({ id: `ch_${next++}`, amount: request.body.amount, status: 'succeeded' }),
  );
  await app.listen({ port: 0, host: '127.0.0.1' });
  return app.server.address().port;
}

const [plain, idem] = await Promise.all([app(false), app(true)]);
console.log(JSON.stringify({ plain, idem }));
process.on('SIGTERM', () => process.exit(0));
