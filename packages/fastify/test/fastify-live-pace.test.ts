import { once } from 'node:events';
import { Readable } from 'node:stream';
import { livePace, spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// A published stream is not paced by its first client: a first client that stops reading (or
// whose connection died silently) holds neither the route nor an attached duplicate back,
// whether the route sends a Node stream (piped to the response) or writes a hijacked reply.

const CAP = 64 * 1024 * 1024;
const pace = livePace();
const spied = spyStore(createMemoryStore({ maxOutcomeBytes: CAP }), { completeDelayMs: 30 });
const app = Fastify({ forceCloseConnections: true });
let url = '';

beforeAll(async () => {
  await app.register(idempotency, {
    store: spied.store,
    scope: 'global',
    maxOutcomeBytes: CAP,
    onWarning: () => {},
  });
  app.post('/piped', async (request, reply) =>
    reply.type('text/event-stream').send(Readable.from(pace.events(request.raw.socket))),
  );
  app.post('/hijacked', async (request, reply) => {
    reply.hijack();
    reply.raw.writeHead(200, { 'content-type': 'text/event-stream' });
    for await (const event of pace.events(request.raw.socket))
      if (!reply.raw.write(event)) await once(reply.raw, 'drain');
    reply.raw.end();
  });
  url = await app.listen({ port: 0, host: '127.0.0.1' });
});
afterAll(() => app.close());

describe('Fastify: a published stream goes at the pace of its route, not of its first client', () => {
  for (const [path, mode] of [
    ['/piped', 'paused'],
    ['/piped', 'dead'],
    ['/hijacked', 'paused'],
  ] as const) {
    it(`${path.slice(1)} route, first client ${mode}: the attached reader gets every event as it is made, the end after the record`, async () => {
      const before = spied.completed.length;
      const seen = await pace.run(url, path, mode, () => spied.completed.length - before);
      expect(seen.firstClientStalled).toBe(true);
      expect(seen.attached).toBe(seen.produced);
      expect(seen.storedAtAttachedEnd).toBe(1);
      if (mode === 'paused') expect(seen.first).toBe(seen.produced);
    });
  }
});
