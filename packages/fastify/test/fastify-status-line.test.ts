import { Readable } from 'node:stream';
import { describeReasonPhrase } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { idempotency } from '../src/index.js';

// Whole replays go out through `reply.send` of the bytes; `/stream` is replayed as a stream
// of its chunks (the Web `Response` path).
describeReasonPhrase('@idem/fastify', async () => {
  let runs = 0;
  const app = Fastify({ forceCloseConnections: true });
  await app.register(idempotency, { store: createMemoryStore(), scope: 'global' });
  app.post('/made', async (_request, reply) => {
    runs++;
    reply.raw.statusMessage = 'Made here';
    return reply.code(201).send({ id: runs });
  });
  app.post('/usual', async (_request, reply) => {
    runs++;
    return reply.code(201).send({ id: runs });
  });
  app.post('/stream', async (_request, reply) => {
    runs++;
    reply.raw.statusMessage = 'Streamed here';
    return reply
      .code(202)
      .type('text/plain')
      .send(Readable.from(['a', 'b', 'c']));
  });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return { url, runs: () => runs, close: () => app.close() };
}, [['/stream', 202, 'Streamed here']]);
