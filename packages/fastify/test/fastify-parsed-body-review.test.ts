import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// The fingerprint is of the body as the client sent it. Fastify's parsed body is now
// fingerprinted from the value itself (no copy): whatever runs between reading it and
// taking the fingerprint (an extras hook) must not change what is fingerprinted.

const apps: ReturnType<typeof Fastify>[] = [];
afterAll(() => Promise.all(apps.map((app) => app.close())));

describe('Fastify parsed JSON body (review)', () => {
  it('an extras hook that annotates request.body does not change the fingerprint', async () => {
    let runs = 0;
    let stamp = 0;
    const app = Fastify();
    apps.push(app);
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: () => ({ principal: 'tenant-a' }),
      onWarning: () => {},
      fingerprint: {
        extras: async (request: { body?: unknown }) => {
          // An application hook that notes when it saw the request on the body it parsed.
          (request.body as Record<string, unknown>).seenAt = ++stamp;
          return {};
        },
      },
    });
    app.post('/charges', async (_request, reply) => {
      runs++;
      reply.code(201);
      return { runs };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const address = app.server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    const send = () =>
      fetch(`http://127.0.0.1:${port}/charges`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': 'k1' },
        body: '{"amount":100}',
      });
    const first = await send();
    expect(first.status).toBe(201);
    const second = await send();
    expect(second.status).toBe(201);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(runs).toBe(1);
  });
});

describe('Fastify parsed JSON body: bodies JSON.parse cannot tell apart (review)', () => {
  // Express and Hono fingerprint such bodies by their bytes (isAmbiguousJson): another body is
  // 422. Fastify hands over only the parsed value, in which they are one body: the plugin
  // keeps a copy of the bytes as Fastify reads them (preParsing) and fingerprints those.
  for (const [name, first, second] of [
    ['integers past 2^53', '{"amount":9007199254740993}', '{"amount":9007199254740992}'],
    ['repeated member names', '{"to":"alice","to":"mallory"}', '{"to":"mallory"}'],
  ] as const) {
    it(`${name}: a key reused with the other body is 422`, async () => {
      let runs = 0;
      const app = Fastify();
      apps.push(app);
      await app.register(idempotency, {
        store: createMemoryStore(),
        scope: () => ({ principal: 'tenant-a' }),
        onWarning: () => {},
      });
      app.post('/transfers', async () => ({ runs: ++runs }));
      await app.listen({ port: 0, host: '127.0.0.1' });
      const address = app.server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      const send = (body: string) =>
        fetch(`http://127.0.0.1:${port}/transfers`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': 'k1' },
          body,
        });
      expect((await send(first)).status).toBe(200);
      expect((await send(second)).status).toBe(422);
      expect(runs).toBe(1);
    });
  }
});
