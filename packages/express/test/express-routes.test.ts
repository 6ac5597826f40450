import { once } from 'node:events';
import { request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import { type ExpressIdempotencyOptions, idempotency } from '../src/index.js';

// Spellings of a path that Express routes to one route must never run it twice under one
// key: a retry through another spelling is replayed or refused (422), never executed.

const options = (): ExpressIdempotencyOptions => ({
  store: createMemoryStore(),
  scope: (req) => ({ principal: req.get('x-tenant') ?? 'tenant-a' }),
  onWarning: () => {},
});

const servers: Server[] = [];
afterAll(() => Promise.all(servers.map((server) => once(server.close(), 'close'))));

async function listen(app: express.Express): Promise<number> {
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

interface Answer {
  status: number;
  replayed: boolean;
}

/** POSTs to `path` exactly as written (no URL normalisation on the way). */
function post(port: number, path: string, key: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'POST', agent: false }, (res) => {
      res.resume();
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          replayed: res.headers['idempotent-replayed'] === 'true',
        }),
      );
    });
    req.setHeader('idempotency-key', key);
    req.setHeader('content-type', 'application/json');
    req.on('error', reject);
    req.end('{"amount":100}');
  });
}

/** Builds the app; every route counts its runs. */
function charges(mount: 'app' | 'route', settings: Record<string, boolean> = {}, catchAll = false) {
  const runs = new Map<string, number>();
  const app = express();
  for (const [name, value] of Object.entries(settings)) app.set(name, value);
  const guard = idempotency(options());
  if (mount === 'app') app.use(guard);
  const handlers = mount === 'route' ? [guard] : [];
  const count =
    (name: string): express.RequestHandler =>
    (_req, res) => {
      runs.set(name, (runs.get(name) ?? 0) + 1);
      res.status(201).json({ name });
    };
  app.post('/charges', ...handlers, count('charges'));
  app.post('/charges/:id/capture', ...handlers, count('capture'));
  app.post('/refunds', ...handlers, count('refunds'));
  const api = express.Router();
  api.post('/payouts', ...handlers, count('payouts'));
  app.use('/api', api);
  if (catchAll) app.post('/*splat', ...handlers, count('any'));
  return { app, runs };
}

/** Sends every spelling with one key; the route must run once, every other answer a replay or 422. */
async function expectOneRun(
  port: number,
  runs: Map<string, number>,
  route: string,
  spellings: string[],
) {
  const key = `k-${route}-${Math.random()}`;
  const answers = [];
  for (const path of spellings) answers.push({ path, ...(await post(port, path, key)) });
  expect(runs.get(route), JSON.stringify(answers)).toBe(1);
  expect(answers[0]).toMatchObject({ status: 201, replayed: false });
  for (const answer of answers.slice(1)) {
    expect([201, 422], answer.path).toContain(answer.status);
    if (answer.status === 201) expect(answer.replayed, answer.path).toBe(true);
  }
}

describe.each(['app', 'route'] as const)('@idem/express mounted on the %s', (mount) => {
  it('runs a route once whatever the spelling of its path (trailing slash, case, escapes)', async () => {
    const { app, runs } = charges(mount);
    const port = await listen(app);
    await expectOneRun(port, runs, 'charges', [
      '/charges',
      '/charges/',
      '/CHARGES',
      '/Charges/',
      '/charges?x=1',
    ]);
    await expectOneRun(port, runs, 'capture', [
      '/charges/ch_1/capture',
      '/charges/ch_1/capture/',
      '/CHARGES/ch_1/Capture',
      '/charges/ch%5F1/capture',
    ]);
    await expectOneRun(port, runs, 'payouts', ['/api/payouts', '/API/payouts/', '/api/PAYOUTS']);
  });

  it('keeps one key on two routes apart, and a different resource of one route apart', async () => {
    const { app, runs } = charges(mount);
    const port = await listen(app);
    expect(await post(port, '/charges', 'shared')).toEqual({ status: 201, replayed: false });
    expect(await post(port, '/refunds', 'shared')).toEqual({ status: 201, replayed: false });
    expect(await post(port, '/charges/ch_1/capture', 'shared')).toEqual({
      status: 201,
      replayed: false,
    });
    expect(await post(port, '/charges/ch_2/capture', 'other')).toEqual({
      status: 201,
      replayed: false,
    });
    expect(Object.fromEntries(runs)).toEqual({ charges: 1, refunds: 1, capture: 2 });
  });

  it('never runs a route for a spelling Express does not route to it', async () => {
    const { app, runs } = charges(mount);
    const port = await listen(app);
    expect((await post(port, '/charges', 'unrouted')).status).toBe(201);
    for (const path of ['/ch%61rges', '//charges', '/charges;x', '/x/../charges', '/charges//']) {
      expect((await post(port, path, 'unrouted')).status, path).not.toBe(201);
    }
    expect(runs.get('charges')).toBe(1);
  });

  it('never takes a path that starts with two slashes for a host', async () => {
    const { app, runs } = charges(mount, {}, true);
    const port = await listen(app);
    expect(await post(port, '//a/payouts', 'hosts')).toEqual({ status: 201, replayed: false });
    // Read as a host and a path, both would be '/payouts': the second got the first's replay.
    // Now another path: its own operation (app.use), or the same route's other resource (422).
    expect(await post(port, '//b/payouts', 'hosts')).toEqual({
      status: mount === 'app' ? 201 : 422,
      replayed: false,
    });
    expect(runs.get('any')).toBe(mount === 'app' ? 2 : 1);
  });

  it('honours strict and case-sensitive routing: other spellings do not reach the route', async () => {
    const { app, runs } = charges(mount, {
      'strict routing': true,
      'case sensitive routing': true,
    });
    const port = await listen(app);
    expect((await post(port, '/charges', 'strict')).status).toBe(201);
    for (const path of ['/charges/', '/CHARGES', '//charges', '/charges;x', '/x/../charges']) {
      expect((await post(port, path, 'strict')).status, path).not.toBe(201);
    }
    expect(runs.get('charges')).toBe(1);
  });
});
