import { request } from 'node:http';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Spellings of a path that Fastify routes to one route must never run it twice under one
// key: the operation is the route Fastify matched (request.routeOptions.url), so a retry
// through another spelling is replayed or refused (422), never executed.

const apps: ReturnType<typeof Fastify>[] = [];
afterAll(() => Promise.all(apps.map((app) => app.close())));

/** Serves the app on loopback; every route counts its runs. */
async function start(lenient: boolean) {
  const runs = new Map<string, number>();
  const app = Fastify({
    routerOptions: lenient
      ? { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true, caseSensitive: false }
      : {},
  });
  apps.push(app);
  await app.register(idempotency, {
    store: createMemoryStore(),
    scope: (request) => ({ principal: request.headers['x-tenant'] ?? 'tenant-a' }),
    onWarning: () => {},
  });
  const count =
    (name: string) => async (_request: unknown, reply: { code(n: number): unknown }) => {
      runs.set(name, (runs.get(name) ?? 0) + 1);
      reply.code(201);
      return { name };
    };
  app.post('/charges', count('charges'));
  app.post('/charges/:id/capture', count('capture'));
  app.post('/refunds', count('refunds'));
  app.post('/:tenant/payouts', count('payouts'));
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  return { port: typeof address === 'object' && address ? address.port : 0, runs };
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

/** Sends every spelling with one key: the route runs once, every other answer is a replay or 422. */
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

describe('@idem/fastify and path spellings', () => {
  it('runs a route once whatever the spelling its router accepts (slashes, case, escapes)', async () => {
    const { port, runs } = await start(true);
    await expectOneRun(port, runs, 'charges', [
      '/charges',
      '/charges/',
      '/CHARGES',
      '//charges',
      '/ch%61rges',
    ]);
    await expectOneRun(port, runs, 'capture', [
      '/charges/ch_1/capture',
      '/charges/ch%5F1/capture/',
      '/Charges/ch_1/capture',
    ]);
  });

  it('keeps one key on two routes apart', async () => {
    const { port, runs } = await start(false);
    for (const path of ['/charges', '/refunds', '/charges/ch_1/capture']) {
      expect(await post(port, path, 'shared'), path).toEqual({ status: 201, replayed: false });
    }
    expect(await post(port, '/charges/ch_2/capture', 'shared')).toEqual({
      status: 422,
      replayed: false,
    });
    expect(runs.get('capture')).toBe(1);
  });

  it('never takes a path that starts with two slashes for a host', async () => {
    const { port, runs } = await start(true);
    expect(await post(port, '//a/payouts', 'hosts')).toEqual({ status: 201, replayed: false });
    // Another tenant's path: read as a host and a path, both would be '/payouts' (a replay).
    expect(await post(port, '//b/payouts', 'hosts')).toEqual({ status: 422, replayed: false });
    expect(runs.get('payouts')).toBe(1);
  });

  it('leaves spellings a strict router does not route alone', async () => {
    const { port, runs } = await start(false);
    expect((await post(port, '/charges', 'strict')).status).toBe(201);
    for (const path of ['/charges/', '/CHARGES', '//charges', '/charges;x', '/x/../charges']) {
      expect((await post(port, path, 'strict')).status, path).not.toBe(201);
    }
    expect(runs.get('charges')).toBe(1);
  });
});
