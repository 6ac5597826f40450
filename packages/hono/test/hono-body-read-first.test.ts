import { type ServerType, serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { validator } from 'hono/validator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// A body read before the middleware, through Hono (a validator in front of it, or a scope hook
// that takes the tenant from the body), is still fingerprinted: a retry replays, another body
// gets 422. The raw request is consumed by then; Hono keeps what it read.

const runs = new Map<string, number>();
const run = (name: string) => {
  runs.set(name, (runs.get(name) ?? 0) + 1);
  return runs.get(name);
};
let server: ServerType;
let url = '';

beforeAll(async () => {
  const app = new Hono();
  const guard = () =>
    idempotency({
      store: createMemoryStore(),
      scope: (c) => ({ principal: c.req.header('x-tenant') ?? 'tenant-a' }),
      onWarning: () => {},
    });
  app.post(
    '/json',
    validator('json', (value) => value),
    guard(),
    (c) => c.json({ run: run('json'), body: c.req.valid('json') }, 201),
  );
  app.post(
    '/form',
    validator('form', (value) => value),
    guard(),
    (c) => c.json({ run: run('form'), body: c.req.valid('form') }, 201),
  );
  app.post(
    '/tenant-in-body',
    idempotency({
      store: createMemoryStore(),
      scope: async (c) => ({ principal: (await c.req.json<{ tenant: string }>()).tenant }),
      onWarning: () => {},
    }),
    async (c) => c.json({ run: run('tenant'), body: await c.req.json() }, 201),
  );
  await new Promise<void>((resolve) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => {
      url = `http://127.0.0.1:${info.port}`;
      resolve();
    });
  });
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

async function post(path: string, key: string, body: BodyInit, type?: string) {
  const response = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'idempotency-key': key, ...(type ? { 'content-type': type } : {}) },
    body,
  });
  return {
    status: response.status,
    replayed: response.headers.get('idempotent-replayed'),
    body: await response.json(),
  };
}

describe('@idem/hono after the body was read through Hono', () => {
  it.each([
    ['/json', 'json', '{"amount":100}', '{"amount":200}', 'application/json'],
    [
      '/form',
      'form',
      'amount=100&note=x',
      'amount=200&note=x',
      'application/x-www-form-urlencoded',
    ],
    [
      '/tenant-in-body',
      'tenant',
      '{"tenant":"t1","a":1}',
      '{"tenant":"t1","a":2}',
      'application/json',
    ],
  ])(
    '%s: runs once, replays the retry, refuses another body',
    async (path, name, one, other, type) => {
      const first = await post(path, `k-${name}`, one, type);
      expect(first).toMatchObject({ status: 201, replayed: null, body: { run: 1 } });
      const again = await post(path, `k-${name}`, one, type);
      expect(again).toEqual({ ...first, replayed: 'true' });
      expect((await post(path, `k-${name}`, other, type)).status).toBe(422);
      expect(runs.get(name)).toBe(1);
    },
  );
});
