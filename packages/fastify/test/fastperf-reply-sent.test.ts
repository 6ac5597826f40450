import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { type FastifyIdempotencyOptions, idempotency } from '../src/index.js';

// fastperf: the recorder holds the response's end until the outcome is recorded. Fastify reads
// `reply.sent` from `res.writableEnded`: while the end was held it read false, so an async
// route that returns the reply waited for the response's 'finish' (`reply.then` through
// `eos`), and a second `reply.send` went on to a second head instead of being refused as
// Fastify refuses it without idem. The plugin now has `writableEnded` read true from the
// route's end on (`endedWhileHeld`).

const apps: FastifyInstance[] = [];
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close();
});

async function serve(withIdem: boolean, setup: (app: FastifyInstance) => void) {
  const warnings: string[] = [];
  const app = Fastify({
    logger: {
      level: 'warn',
      stream: {
        write: (line: string) => {
          warnings.push(line);
        },
      },
    },
  });
  apps.push(app);
  if (withIdem)
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: 'global',
      leaseMs: 1_000,
    });
  setup(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  const post = async (key: string) => {
    const response = await fetch(`${url}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
      body: JSON.stringify({ sku: 'A-1' }),
      signal: AbortSignal.timeout(5_000),
    });
    return {
      status: response.status,
      replayed: response.headers.get('idempotent-replayed'),
      body: await response.text(),
    };
  };
  return { post, warnings };
}

describe('reply.sent once the route sent its reply, with the end held for the record', () => {
  for (const withIdem of [false, true]) {
    it(`${withIdem ? 'with' : 'without'} idem: reply.sent and writableEnded read true right after reply.send; the retry replays`, async () => {
      const seen: boolean[][] = [];
      let runs = 0;
      const { post } = await serve(withIdem, (app) => {
        app.post('/orders', async (_request, reply) => {
          runs++;
          reply.code(201).send({ order: runs });
          seen.push([reply.sent, reply.raw.writableEnded]);
          return reply;
        });
      });
      const first = await post('sent-1');
      expect(first).toMatchObject({ status: 201, body: '{"order":1}' });
      // As Node has it once `end` is called (with idem the bytes still wait for the record).
      expect(seen).toEqual([[true, true]]);
      const again = await post('sent-1');
      expect(again.status).toBe(201);
      expect(again.body).toBe('{"order":withIdem}'.replace('withIdem', withIdem ? '1' : '2'));
      expect(again.replayed).toBe(withIdem ? 'true' : null);
    });

    it(`${withIdem ? 'with' : 'without'} idem: a second reply.send is refused (Fastify's warning), the first body is sent and recorded`, async () => {
      let runs = 0;
      const { post, warnings } = await serve(withIdem, (app) => {
        app.post('/orders', async (_request, reply) => {
          runs++;
          reply.code(201).send({ first: runs });
          reply.code(202).send({ second: runs });
          return reply;
        });
      });
      const first = await post('twice-1');
      expect(first).toMatchObject({ status: 201, body: '{"first":1}' });
      expect(warnings.some((line) => line.includes('Reply was already sent'))).toBe(true);
      const again = await post('twice-1');
      if (withIdem) expect(again).toEqual({ status: 201, replayed: 'true', body: '{"first":1}' });
      else expect(again).toMatchObject({ status: 201, body: '{"first":2}' });
      expect(runs).toBe(withIdem ? 1 : 2);
    });
  }

  it('a recorded response whose record fails is destroyed, never ended: writableEnded still read true from the route end (as Node has it once end is called)', async () => {
    const seen: boolean[] = [];
    const app = Fastify();
    apps.push(app);
    const inner = createMemoryStore();
    const store: FastifyIdempotencyOptions['store'] = {
      capabilities: inner.capabilities,
      acquire: (input) => inner.acquire(input),
      complete: () => Promise.reject(new Error('store down')),
      release: (input) => inner.release(input),
      extend: (input) => inner.extend(input),
      get: (key) => inner.get(key),
    };
    await app.register(idempotency, {
      store,
      scope: 'global',
      leaseMs: 300,
      maxHoldMs: 600,
      completionWaitMs: 300,
      onWarning: () => {},
    });
    app.post('/orders', async (_request, reply) => {
      reply.raw.once('close', () => seen.push(reply.raw.writableEnded, reply.raw.destroyed));
      reply.code(201).send({ ok: true });
      return reply;
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
    const failed = await fetch(`${url}/orders`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'fails-1' },
      body: '{}',
      signal: AbortSignal.timeout(5_000),
    }).then(
      (response) => response.text(),
      (error: Error) => error,
    );
    // The client gets no complete answer (the body is cut, or the connection reset).
    expect(failed instanceof Error || failed !== '{"ok":true}').toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(seen).toEqual([true, true]);
  });
});
