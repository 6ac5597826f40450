import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// A route's own settings (`config.idempotency`, its `bodyTimeoutMs` among them) are checked as
// the route is added, through the plugin's onRoute hook, so a bad one fails app.ready(). A
// route registered BEFORE the plugin cannot be checked then: Fastify runs onRoute hooks only
// for routes added after them, and gives a plugin no list of the routes already added nor
// their config (`findRoute` answers a handler and params, `printRoutes` no config; the route
// contexts are private). Such a route's settings are checked at its first request instead:
// a 500, nothing run, no key taken. These tests pin both sides, so that a Fastify that lets
// the plugin see earlier routes shows up here.

const bad = { idempotency: { bodyTimeoutMs: -1 } };

describe('config.idempotency.bodyTimeoutMs: when a bad one is found', () => {
  it('a route registered after the plugin: app.ready() fails with the route named', async () => {
    const app = Fastify();
    await app.register(idempotency, { store: createMemoryStore(), scope: 'global' });
    app.post('/after', { config: bad }, async () => ({ ok: true }));
    await expect(app.ready()).rejects.toThrow(
      /route POST \/after: config\.idempotency\.bodyTimeoutMs must be a positive/,
    );
    await app.close().catch(() => {});
  });

  it('a route registered before the plugin: ready() cannot see it, its first keyed request is a 500 and runs nothing', async () => {
    const app = Fastify();
    let runs = 0;
    app.post('/before', { config: bad }, async () => ({ runs: ++runs }));
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
    });
    await app.ready();
    try {
      const answer = await app.inject({
        method: 'POST',
        url: '/before',
        headers: { 'idempotency-key': '"k"', 'content-type': 'application/json' },
        payload: '{"a":1}',
      });
      expect(answer.statusCode).toBe(500);
      expect(runs).toBe(0);
    } finally {
      await app.close();
    }
  });
});
