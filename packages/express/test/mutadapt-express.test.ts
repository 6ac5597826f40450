import { finalOnceStarted } from '@idem/http';
import { json, lateStartProbe, listening, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Mutation audit of the adapter (wt/mutadapt): each test fails under one small change of
// src/ that no earlier test noticed, and passes on the real code.

const runs = new Map<string, number>();
const ran = (name: string) => {
  const n = (runs.get(name) ?? 0) + 1;
  runs.set(name, n);
  return n;
};
let counter = 0;
const newKey = () => `mutadapt-${process.pid}-${Date.now()}-${++counter}`;
let running: Awaited<ReturnType<typeof listening>>;
let url = '';

const LEASE = 300;
/** The /late route's probe of the late start. */
const late = lateStartProbe(LEASE);

beforeAll(async () => {
  const app = express();
  const guard = idempotency({
    store: createMemoryStore(),
    scope: () => ({ principal: 'tenant-a' }),
    isFinal: finalOnceStarted,
    onWarning: () => {},
  });
  // One router mounted at two bases, the middleware on its route: the same route path
  // (`/charges`) serves two operations, `/v1/charges` and `/v2/charges`.
  for (const base of ['/v1', '/v2']) {
    const router = express.Router();
    router.post('/charges', guard, express.json(), (_req, res) => {
      res.status(201).json({ base, n: ran(`charges${base}`) });
    });
    app.use(base, router);
  }
  // Mounted on the app, with a middleware after it that fails before any route matched:
  // a 5xx is the execution's outcome (recorded under finalOnceStarted), only a 4xx of that
  // kind (a parser's 400, a 404) is not.
  app.use('/app', guard);
  app.use('/app', (_req, _res, next) => {
    ran('failing-middleware');
    next(new Error('downstream dependency failed'));
  });
  // The hold comes `armed` microtasks after the miss: some depths between the acquisition
  // and the route's start, where the middleware must judge the start late.
  const lateGuard = idempotency({
    store: createMemoryStore(),
    scope: () => ({ principal: 'tenant-a' }),
    leaseMs: LEASE,
    storeTimeoutMs: 1_000,
    onWarning: () => {},
    onEvent: late.onEvent,
  });
  app.post('/late', lateGuard, (_req, res) => {
    late.started();
    res.status(201).json({ ok: true });
  });
  running = await listening(app.listen(0, '127.0.0.1'));
  url = running.url;
});
afterAll(() => running?.close());

describe('@idem/express mutation audit (mutadapt)', () => {
  it('names a route mounted under a base by its base too: one key on /v1/charges and /v2/charges runs each once', async () => {
    const key = newKey();
    const v1 = await send(url, '/v1/charges', { key, body: { amount: 1 } });
    expect(v1.status).toBe(201);
    // Another operation: run, neither replayed from /v1 nor refused as a reused key (422).
    const v2 = await send(url, '/v2/charges', { key, body: { amount: 1 } });
    expect(v2.status).toBe(201);
    expect(v2.headers['idempotent-replayed']).toBeUndefined();
    expect(json(v2)).toMatchObject({ base: '/v2', n: 1 });
    const again = await send(url, '/v2/charges', { key, body: { amount: 1 } });
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(runs.get('charges/v2')).toBe(1);
  });

  it('records a 5xx answered before any route matched as the outcome (finalOnceStarted): the failing work is not run again', async () => {
    const key = newKey();
    const before = runs.get('failing-middleware') ?? 0;
    const first = await send(url, '/app/anything', { key, body: { amount: 2 } });
    expect(first.status).toBe(500);
    const retry = await send(url, '/app/anything', { key, body: { amount: 2 } });
    expect(retry.status).toBe(500);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect((runs.get('failing-middleware') ?? 0) - before).toBe(1);
  });

  it('never starts a route past the lease runway since the acquisition: 503 and the key given back (lateStart)', async () => {
    await late.check(url, '/late');
  });
});
