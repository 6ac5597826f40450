import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// An onSend hook that replaces every payload (an envelope, a transform) also sees the
// plugin's own answers. Whatever it makes of their bodies, their status and headers must
// survive it: a duplicate stays 409 with Retry-After, a reused key 422, a replay keeps the
// recorded status and Idempotent-Replayed. Never a 200 the client would take for a success.

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
// Closing waits for keep-alive sockets otherwise.
const app = Fastify({ forceCloseConnections: true });
let url = '';
let runs = 0;

beforeAll(async () => {
  await app.register(idempotency, {
    store: createMemoryStore(),
    scope: () => ({ principal: 'tenant-a' }),
    onWarning: () => {},
  });
  app.post(
    '/charges',
    { onSend: async () => JSON.stringify({ enveloped: true }) },
    async (_request, reply) => {
      runs++;
      await sleep(200);
      return reply.code(201).header('location', '/charges/1').send({ id: 1 });
    },
  );
  url = await app.listen({ port: 0, host: '127.0.0.1' });
});
afterAll(() => app.close());

const post = async (key: string | undefined, body = '{"amount":1}') => {
  const response = await fetch(`${url}/charges`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) },
    body,
  });
  await response.arrayBuffer();
  return response;
};

describe('@idem/fastify behind an onSend hook that replaces the payload', () => {
  it('keeps the status and headers of a 409, a 422, a 400 and a replay', async () => {
    const first = post('k-1');
    // Until its handler runs (polled: under load the first request took over 50 ms to arrive).
    for (let i = 0; runs === 0 && i < 500; i++) await sleep(10);
    expect(runs).toBe(1);
    const duplicate = await post('k-1');
    expect(duplicate.status).toBe(409);
    expect(duplicate.headers.get('retry-after')).toBe('1');
    expect((await first).status).toBe(201);

    const replay = await post('k-1');
    expect(replay.status).toBe(201);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.headers.get('location')).toBe('/charges/1');

    expect((await post('k-1', '{"amount":2}')).status).toBe(422);
    expect((await post(undefined)).status).toBe(400);
    expect(runs).toBe(1);
  });
});
