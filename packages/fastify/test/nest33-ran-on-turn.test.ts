import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// nest33 attack on the "ran on past the turn" judgment (@idem/http's recorder) under an onRequest
// hook that replies 503 after 100 ms (a timeout outside idem):
// - a handler that writes its answer on `reply.raw` after its work when the 503 went out first:
//   Node throws ERR_HTTP_HEADERS_SENT, the handler's promise rejects, and the key was RELEASED as
//   for a failed handler: a retry ran it a second time though its work had run (FINDING, HIGH,
//   exactly-once). Its write after the end shows it reached its answer: now the marker.
// - a handler that replies through `reply` after an await (Fastify drops it: already sent): held,
//   then the marker, never a second run.
// - a handler's own final answer given in a later tick: recorded and replayed.

const TIMEOUT_MS = 100;
let runs = 0;
let app: FastifyInstance;
let url = '';

beforeAll(async () => {
  app = Fastify({ logger: false });
  app.addHook('onRequest', (_request, reply, done) => {
    const timer = setTimeout(() => {
      if (!reply.sent) void reply.code(503).send('timed out');
    }, TIMEOUT_MS);
    reply.raw.once('close', () => clearTimeout(timer));
    done();
  });
  await app.register(idempotency, { store: createMemoryStore(), scope: 'global' });
  app.post('/raw-late', async (_request, reply) => {
    runs += 1;
    await sleep(TIMEOUT_MS * 3);
    reply.raw.writeHead(201, { 'content-type': 'application/json' });
    reply.raw.end(JSON.stringify({ charged: runs }));
  });
  app.post('/reply-late', async (_request, reply) => {
    runs += 1;
    await sleep(TIMEOUT_MS * 3);
    await new Promise((resolve) => setImmediate(resolve));
    reply.code(201);
    return { charged: runs };
  });
  app.post('/own-201', async (_request, reply) => {
    runs += 1;
    await new Promise((resolve) => setImmediate(resolve));
    reply.code(201);
    return { charged: runs };
  });
  url = await app.listen({ port: 0, host: '127.0.0.1' });
});
afterAll(() => app.close());

async function afterHeld(post: () => Promise<{ status: number }>): Promise<number> {
  let last = 409;
  for (let i = 0; i < 40 && last === 409; i += 1) {
    await sleep(50);
    last = (await post()).status;
  }
  return last;
}

describe('nest33 fastify: a handler overtaken by an onRequest hook that replies 503', () => {
  for (const path of ['/raw-late', '/reply-late'])
    it(`${path}: held, then the answered_outside marker, never a second run`, async () => {
      const before = runs;
      const key = `nest33-fastify${path}-${process.pid}`;
      const post = () => send(url, path, { key, body: {} });
      expect((await post()).status).toBe(503);
      expect((await post()).status).toBe(409);
      expect(await afterHeld(post)).toBe(500);
      expect(runs - before).toBe(1);
    });

  it('/own-201: its own final answer given in a later tick is recorded and replayed', async () => {
    const before = runs;
    const key = `nest33-fastify-own201-${process.pid}`;
    const first = await send(url, '/own-201', { key, body: {} });
    expect(first.status).toBe(201);
    const replay = await send(url, '/own-201', { key, body: {} });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.equals(first.body)).toBe(true);
    expect(runs - before).toBe(1);
  });
});
