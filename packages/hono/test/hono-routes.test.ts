import { request } from 'node:http';
import { type ServerType, serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Spellings of a path that Hono routes to one route must never run it twice under one key:
// a retry through another spelling is replayed or refused (422), never executed.

const servers: ServerType[] = [];
afterAll(() =>
  Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve)))),
);

/** Serves the app on loopback; every route counts its runs. */
async function start(strict: boolean, mount: 'app' | 'route') {
  const runs = new Map<string, number>();
  const app = new Hono({ strict });
  const guard = idempotency({
    store: createMemoryStore(),
    scope: (c) => ({ principal: c.req.header('x-tenant') ?? 'tenant-a' }),
    onWarning: () => {},
  });
  if (mount === 'app') app.use(guard);
  const count = (name: string) => (c: { json(value: unknown, status: 201): Response }) => {
    runs.set(name, (runs.get(name) ?? 0) + 1);
    return c.json({ name }, 201);
  };
  const route = (path: string, name: string) =>
    mount === 'app' ? app.post(path, count(name)) : app.post(path, guard, count(name));
  route('/charges', 'charges');
  route('/charges/:id/capture', 'capture');
  route('/refunds', 'refunds');
  const port = await new Promise<number>((resolve) => {
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(info.port),
    );
    servers.push(server);
  });
  return { port, runs };
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

describe.each(['app', 'route'] as const)('@idem/hono mounted on the %s', (mount) => {
  it('runs a route once whatever the spelling of its path (escapes, trailing slash when not strict)', async () => {
    const { port, runs } = await start(false, mount);
    await expectOneRun(port, runs, 'charges', [
      '/charges',
      '/charges/',
      '/ch%61rges',
      '/x/../charges',
    ]);
    await expectOneRun(port, runs, 'capture', [
      '/charges/ch_1/capture',
      '/charges/ch%5F1/capture/',
      '/ch%61rges/ch_1/capture',
    ]);
  });

  it('keeps one key on two routes apart, and a different resource of one route apart', async () => {
    const { port, runs } = await start(true, mount);
    for (const path of ['/charges', '/refunds', '/charges/ch_1/capture']) {
      expect(await post(port, path, 'shared'), path).toEqual({ status: 201, replayed: false });
    }
    expect(await post(port, '/charges/ch_2/capture', 'shared')).toEqual({
      status: 422,
      replayed: false,
    });
    expect(runs.get('capture')).toBe(1);
  });

  it('leaves spellings a strict app does not route alone', async () => {
    const { port, runs } = await start(true, mount);
    expect((await post(port, '/charges', 'strict')).status).toBe(201);
    for (const path of ['/charges/', '/CHARGES', '//charges', '/charges;x']) {
      expect((await post(port, path, 'strict')).status, path).not.toBe(201);
    }
    expect(runs.get('charges')).toBe(1);
  });
});
