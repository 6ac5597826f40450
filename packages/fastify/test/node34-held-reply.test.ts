import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyedGates, statusOnceFree } from '../../http-conformance/test/node34-kit.js';
import { idempotency } from '../src/index.js';

// node34 (HIGH, exactly-once): an async route that returns `reply` before it answers (Fastify's
// "answer later" pattern) under an onRequest hook that replies 504 when the route has not
// answered in time: the hold of the route ended at `return reply`, the 504 (not final) then
// released the key while the route's work still ran, and every retry ran the route again
// (10 retries, 10 runs). Now the hold lasts until the route itself sends: retries get 409
// meanwhile, then the answered_outside marker (500), never a second run.
// Also (node34, "same-turn settle"): an outside 504 and the route's own end in the same turn
// (the hook's timer wakes the route) was taken for the route's own answer and released.

const TIMEOUT_MS = 60;
const gates = keyedGates();
let runs = 0;
let app: FastifyInstance;
let url = '';

beforeAll(async () => {
  app = Fastify({ logger: false });
  app.addHook('onRequest', (request, reply, done) => {
    const timer = setTimeout(() => {
      if (reply.sent) return;
      void reply.code(504).send('timed out');
      // The route wakes in the very turn the 504 went out (same-turn case).
      if (request.url === '/same-turn') gates.open(request.headers['idempotency-key']);
    }, TIMEOUT_MS);
    reply.raw.once('close', () => clearTimeout(timer));
    done();
  });
  await app.register(idempotency, { store: createMemoryStore(), scope: 'global' });
  app.post('/later', async (request, reply: FastifyReply) => {
    runs += 1;
    const wait = gates.wait(request.headers['idempotency-key']);
    void wait.then(() => reply.code(201).send({ charged: runs }));
    return reply;
  });
  app.post('/own-400-later', async (_request, reply: FastifyReply) => {
    runs += 1;
    setImmediate(() => void reply.code(400).send({ refused: runs }));
    return reply;
  });
  app.post('/same-turn', async (request) => {
    runs += 1;
    await gates.wait(request.headers['idempotency-key']);
    return { charged: runs };
  });
  url = await app.listen({ port: 0, host: '127.0.0.1' });
});
afterAll(() => app.close());

describe('node34 fastify: a route that returns reply and answers later, overtaken by a 504 hook', () => {
  it('retries get 409 while its work runs, then the marker; one run for 10 retries', async () => {
    const before = runs;
    const key = `node34-later-${process.pid}`;
    const post = () => send(url, '/later', { key, body: {} });
    expect((await post()).status).toBe(504);
    for (let i = 0; i < 10; i += 1) expect((await post()).status).toBe(409);
    expect(runs - before).toBe(1);
    gates.open(key);
    expect(await statusOnceFree(post)).toBe(500);
    expect(runs - before).toBe(1);
  });

  it('its own answer that is not final, given later, still frees the key (a retry runs)', async () => {
    const before = runs;
    const key = `node34-own400-${process.pid}`;
    expect((await send(url, '/own-400-later', { key, body: {} })).status).toBe(400);
    expect((await send(url, '/own-400-later', { key, body: {} })).status).toBe(400);
    expect(runs - before).toBe(2);
  });

  it('same turn: the 504 and the route settling right after it are not its own answer', async () => {
    const before = runs;
    const key = `node34-same-turn-${process.pid}`;
    const post = () => send(url, '/same-turn', { key, body: {} });
    expect((await post()).status).toBe(504);
    expect(await statusOnceFree(post)).toBe(500);
    expect(runs - before).toBe(1);
  });
});
