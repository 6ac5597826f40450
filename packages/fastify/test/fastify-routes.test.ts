import { finalOnceStarted } from '@idem/http';
import { json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

describe('@idem/fastify route-level options', () => {
  const app = Fastify();
  const runs = new Map<string, number>();
  const run = (name: string) => {
    runs.set(name, (runs.get(name) ?? 0) + 1);
    return runs.get(name);
  };
  let url = '';

  beforeAll(async () => {
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: (request) => ({ principal: request.headers['x-tenant'] ?? 'tenant-a' }),
      onWarning: () => {},
    });
    app.post('/default', async (request) => ({
      run: run('default'),
      fence: request.idempotency?.fence,
    }));
    app.post('/off', { config: { idempotency: false } }, async () => ({ run: run('off') }));
    app.post('/optional', { config: { idempotency: { required: false } } }, async () => ({
      run: run('optional'),
    }));
    app.post(
      '/stripe',
      { config: { idempotency: { isFinal: finalOnceStarted } } },
      async (_request, reply) => reply.code(500).send({ run: run('stripe') }),
    );
    app.post('/hijacked', async (_request, reply) => {
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'set-cookie': 'a=1' });
      for (const seq of [1, 2, 3]) reply.raw.write(`data: ${seq} run ${run('hijacked')}\n\n`);
      reply.raw.end();
    });
    app.post('/plain-500', async (_request, reply) =>
      reply.code(500).send({ run: run('plain-500') }),
    );
    url = await app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(() => app.close());

  it('applies the plugin options to every route and exposes request.idempotency', async () => {
    expect((await send(url, '/default', { body: {} })).status).toBe(400);
    expect(json(await send(url, '/default', { key: 'd', body: {} }))).toEqual({ run: 1, fence: 1 });
    expect(json(await send(url, '/default', { key: 'd', body: {} }))).toEqual({ run: 1, fence: 1 });
  });

  it('leaves unknown routes to the 404 handler', async () => {
    expect((await send(url, '/nowhere', { body: {} })).status).toBe(404);
  });

  it('turns idempotency off for a route with config.idempotency = false', async () => {
    const first = await send(url, '/off', { body: {} });
    const second = await send(url, '/off', { key: 'same', body: {} });
    const third = await send(url, '/off', { key: 'same', body: {} });
    expect([first, second, third].map((e) => json(e))).toEqual([
      { run: 1 },
      { run: 2 },
      { run: 3 },
    ]);
  });

  it('overrides options per route', async () => {
    expect(json(await send(url, '/optional', { body: {} }))).toEqual({ run: 1 });
    expect(json(await send(url, '/optional', { key: 'o', body: {} }))).toEqual({ run: 2 });
    expect(json(await send(url, '/optional', { key: 'o', body: {} }))).toEqual({ run: 2 });
    const stripe = [
      await send(url, '/stripe', { key: 's', body: {} }),
      await send(url, '/stripe', { key: 's', body: {} }),
    ];
    expect(stripe.map((e) => [e.status, json(e)])).toEqual([
      [500, { run: 1 }],
      [500, { run: 1 }],
    ]);
    const plain = [
      await send(url, '/plain-500', { key: 'p', body: {} }),
      await send(url, '/plain-500', { key: 'p', body: {} }),
    ];
    expect(plain.map((e) => json(e))).toEqual([{ run: 1 }, { run: 2 }]);
  });

  it('records what a hijacked reply writes to the raw response', async () => {
    const first = await send(url, '/hijacked', { key: 'h', body: {} });
    const again = await send(url, '/hijacked', { key: 'h', body: {} });
    expect(first.body.toString()).toBe('data: 1 run 1\n\ndata: 2 run 2\n\ndata: 3 run 3\n\n');
    expect(again.body.equals(first.body)).toBe(true);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.headers['set-cookie']).toBeUndefined();
    expect(runs.get('hijacked')).toBe(3);
  });
});
