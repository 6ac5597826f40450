/**
 * rev12c (adversarial review of 94a3db0/9ce9ee9): Fastify reads `Last-Event-ID` from Node's
 * IncomingMessage (a byte string); @idem/http decodes it by UTF-8. The tests are the
 * conformance kit's (`describeLastEventIdBytes`).
 */
import { describeLastEventIdBytes, LAST_EVENT_ID_EVENTS } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { idempotency } from '../src/index.js';

describeLastEventIdBytes('rev12c Fastify', async () => {
  let runs = 0;
  const app = Fastify();
  await app.register(idempotency, {
    store: createMemoryStore(),
    scope: 'global',
    onWarning: () => {},
  });
  app.post('/stream', async (_request, reply) => {
    runs++;
    reply.hijack();
    reply.raw.writeHead(200, { 'content-type': 'text/event-stream' });
    for (const event of LAST_EVENT_ID_EVENTS) reply.raw.write(event);
    reply.raw.end();
  });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return { url, runs: () => runs, close: () => app.close() };
});
