import type { IdempotencyStore } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

describe('@idem/hono drain', () => {
  it('waits for a final write that core retries after a store failure, then the retry replays', async () => {
    const memory = createMemoryStore();
    let failCompletes = true;
    const store: IdempotencyStore = {
      capabilities: memory.capabilities,
      acquire: (input) => memory.acquire(input),
      complete: async (input) => {
        if (failCompletes) throw new Error('store down');
        return memory.complete(input);
      },
      release: (input) => memory.release(input),
      extend: (input) => memory.extend(input),
      get: (key) => memory.get(key),
    };
    const middleware = idempotency({
      store,
      scope: () => ({ principal: 'p' }),
      completionWaitMs: 20,
      onWarning: () => {},
    });
    let runs = 0;
    const app = new Hono();
    app.post('/charges', middleware, (c) => c.json({ run: ++runs }, 201));
    const post = () =>
      app.request('/charges', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': 'k1' },
        body: '{}',
      });
    const first = await post();
    // The outcome could not be recorded in time: the body is not ended as a success.
    await first.text().catch(() => undefined);
    expect(await middleware.drain(50)).toBe(1);
    failCompletes = false;
    expect(await middleware.drain(5_000)).toBe(0);
    const retry = await post();
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(await retry.json()).toEqual({ run: 1 });
    expect(runs).toBe(1);
  });

  it('passes { finalWritesOnly } to core: the give-back of a timed-out acquisition is not waited for', async () => {
    const never = () => new Promise<never>(() => {});
    const memory = createMemoryStore();
    const middleware = idempotency({
      store: {
        capabilities: memory.capabilities,
        acquire: never,
        complete: never,
        release: never,
        extend: never,
        get: never,
      } as IdempotencyStore,
      scope: () => ({ principal: 'p' }),
      storeTimeoutMs: 50,
      onWarning: () => {},
    });
    const app = new Hono();
    app.post('/charges', middleware, (c) => c.json({}, 201));
    const response = await app.request('/charges', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'k2' },
      body: '{}',
    });
    expect(response.status).toBe(503);
    expect(await middleware.drain(20)).toBeGreaterThanOrEqual(1);
    expect(await middleware.drain(20, { finalWritesOnly: true })).toBe(0);
  });
});
