import { type ServerType, serve } from '@hono/node-server';
import { lateStartProbe, PROBLEM, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { validator } from 'hono/validator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Mutation audit of the adapter (wt/mutadapt): each test fails under one small change of
// src/ that no earlier test noticed, and passes on the real code.

let counter = 0;
const newKey = () => `mutadapt-${process.pid}-${Date.now()}-${++counter}`;
const runs = new Map<string, number>();
const ran = (name: string) => {
  runs.set(name, (runs.get(name) ?? 0) + 1);
  return runs.get(name);
};
const LEASE = 300;
/** The /late route's probe of the late start. */
const late = lateStartProbe(LEASE);
let server: ServerType;
let url = '';

beforeAll(async () => {
  const app = new Hono();
  // A validator in front of the middleware reads the body first: the middleware takes the
  // bytes from Hono's body cache, and its limit still holds there.
  app.post(
    '/validated',
    validator('json', (value) => value),
    idempotency({
      store: createMemoryStore(),
      scope: () => ({ principal: 'tenant-a' }),
      maxBodyBytes: 64,
      onWarning: () => {},
    }),
    (c) => c.json({ run: ran('validated') }, 201),
  );
  app.post(
    '/late',
    idempotency({
      store: createMemoryStore(),
      scope: () => ({ principal: 'tenant-a' }),
      leaseMs: LEASE,
      storeTimeoutMs: 1_000,
      onWarning: () => {},
      onEvent: late.onEvent,
    }),
    (c) => {
      late.started();
      return c.json({ ok: true }, 201);
    },
  );
  // An error handler that throws itself (for this route): the throw comes out of the
  // middleware's `next()`, and the key must not stay held by an execution that is over.
  app.post(
    '/rethrow',
    idempotency({
      store: createMemoryStore(),
      scope: () => ({ principal: 'tenant-a' }),
      onWarning: () => {},
    }),
    () => {
      ran('rethrow');
      throw new Error('the route failed');
    },
  );
  app.onError((error, c) => {
    if (c.req.path === '/rethrow') throw error;
    return c.text('error', 500);
  });
  await new Promise<void>((resolve) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => {
      url = `http://127.0.0.1:${info.port}`;
      resolve();
    });
  });
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('@idem/hono mutation audit (mutadapt)', () => {
  it('refuses (413) a chunked body past maxBodyBytes that a validator read first, and runs nothing', async () => {
    const before = runs.get('validated') ?? 0;
    // Chunked: no Content-Length to refuse it by before the body is read.
    const answer = await send(url, '/validated', {
      key: newKey(),
      body: { pad: 'p'.repeat(200) },
      chunked: true,
    });
    expect(answer.status).toBe(413);
    expect(JSON.parse(answer.body.toString()).type).toBe(PROBLEM.bodyTooLarge);
    expect(runs.get('validated') ?? 0).toBe(before);
    // Under the limit it runs.
    const small = await send(url, '/validated', { key: newKey(), body: { a: 1 }, chunked: true });
    expect(small.status).toBe(201);
  });

  it('releases the key when the throw of the route comes out of the error handler: a retry runs (no 409)', async () => {
    const key = newKey();
    const before = runs.get('rethrow') ?? 0;
    const first = await send(url, '/rethrow', { key, body: { a: 1 } });
    expect(first.status).toBe(500);
    const retry = await send(url, '/rethrow', { key, body: { a: 1 } });
    expect(retry.status).toBe(500);
    expect((runs.get('rethrow') ?? 0) - before).toBe(2);
  });

  it('never starts a route past the lease runway since the acquisition: 503 and the key given back (lateStart)', async () => {
    await late.check(url, '/late');
  });
});
