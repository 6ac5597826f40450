import { type ServerType, serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { cors } from 'hono/cors';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev10: middleware after idem does not run for a replay. CORS headers are not on the
// recorded allowlist (rightly: they depend on the Origin), so with cors() mounted after the
// middleware the first response carries Access-Control-Allow-Origin and the replay does not:
// a browser retry cannot read the replay it is given. Neither README says where cors() goes.

const servers: ServerType[] = [];
afterAll(() =>
  Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve)))),
);

async function start(order: 'idem-first' | 'cors-first') {
  let runs = 0;
  const app = new Hono();
  const guard = idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} });
  const allow = cors({ origin: 'https://app.example' });
  if (order === 'idem-first') app.use(guard, allow);
  else app.use(allow, guard);
  app.post('/charges', (c) => {
    runs++;
    return c.json({ id: 1 }, 201);
  });
  const port = await new Promise<number>((resolve) => {
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(info.port),
    );
    servers.push(server);
  });
  return { port, runs: () => runs };
}

async function post(port: number, key: string) {
  const response = await fetch(`http://127.0.0.1:${port}/charges`, {
    method: 'POST',
    headers: { 'idempotency-key': key, origin: 'https://app.example' },
    signal: AbortSignal.timeout(5_000),
  });
  await response.arrayBuffer();
  return {
    replayed: response.headers.get('idempotent-replayed') === 'true',
    allowOrigin: response.headers.get('access-control-allow-origin'),
  };
}

describe('rev10 hono: CORS on a replay', () => {
  // FINDING (LOW): with cors() mounted after idempotency(), the first response has Access-Control-Allow-Origin and the replay has none (a browser cannot read it); expected the replay to carry it, or the README to require cors() before the middleware (as Koa's README says for headers set before next())
  it.fails('idem first: the replay carries the Access-Control-Allow-Origin the first response had', async () => {
    const { port, runs } = await start('idem-first');
    expect((await post(port, 'cors')).allowOrigin).toBe('https://app.example');
    const replay = await post(port, 'cors');
    expect(replay.replayed).toBe(true);
    // Observed: null.
    expect(replay.allowOrigin).toBe('https://app.example');
    expect(runs()).toBe(1);
  });

  it('held: cors() first, the replay carries it', async () => {
    const { port, runs } = await start('cors-first');
    await post(port, 'cors2');
    expect(await post(port, 'cors2')).toEqual({
      replayed: true,
      allowOrigin: 'https://app.example',
    });
    expect(runs()).toBe(1);
  });
});
