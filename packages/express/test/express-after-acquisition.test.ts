import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { finalOnceStarted, type ResponsePolicy } from '@idem/http';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Every way a request can end after its key was acquired settles the key at once: recorded
// when the policy says final, released otherwise. None leaves it held (a retry would get 409
// until the lease passed).

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const runs = new Map<string, number>();
const run = (name: string) => {
  runs.set(name, (runs.get(name) ?? 0) + 1);
  return runs.get(name);
};

const routes: Record<string, express.RequestHandler> = {
  throws: () => {
    run('throws');
    throw new Error('boom');
  },
  rejects: async () => {
    run('rejects');
    await sleep(5);
    throw new Error('boom');
  },
  'next-error': (_req, _res, next) => {
    run('next-error');
    next(new Error('boom'));
  },
  'destroys-mid-stream': async (_req, res) => {
    run('destroys-mid-stream');
    res.status(200).type('text/plain');
    res.write('part one\n');
    await sleep(10);
    res.destroy(new Error('upstream broke'));
  },
  'ends-early': (_req, res) => {
    run('ends-early');
    res.status(201).end();
  },
};

function createApp(isFinal?: ResponsePolicy): express.Express {
  const app = express();
  app.use(
    idempotency({
      store: createMemoryStore(),
      scope: (req) => ({ principal: req.get('x-tenant') ?? 'tenant-a' }),
      ...(isFinal ? { isFinal } : {}),
      onWarning: () => {},
    }),
  );
  // An auth middleware that refuses before any route runs.
  app.use('/refused', (_req, res) => {
    run('refused');
    res.status(401).json({ error: 'unauthorized' });
  });
  for (const [name, handler] of Object.entries(routes)) app.post(`/${name}`, handler);
  return app;
}

const servers: Server[] = [];
const urls: Record<'finalOn2xx' | 'finalOnceStarted', string> = {
  finalOn2xx: '',
  finalOnceStarted: '',
};
beforeAll(async () => {
  for (const policy of ['finalOn2xx', 'finalOnceStarted'] as const) {
    const server = createApp(policy === 'finalOnceStarted' ? finalOnceStarted : undefined).listen(
      0,
      '127.0.0.1',
    );
    servers.push(server);
    await once(server, 'listening');
    urls[policy] = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }
});
afterAll(() => Promise.all(servers.map((server) => once(server.close(), 'close'))));

/** One exchange as the assertions compare it (a broken connection is status 0). */
async function post(url: string, path: string, key: string) {
  const exchange = await send(url, path, { key });
  return {
    status: exchange.complete ? exchange.status : 0,
    replayed: exchange.headers['idempotent-replayed'] === 'true',
    body: exchange.body.toString(),
  };
}

/** path, policy, whether the retry replays (true) or runs again (false). */
const cases: [string, keyof typeof urls, boolean][] = [
  ['/throws', 'finalOn2xx', false],
  ['/throws', 'finalOnceStarted', true],
  ['/rejects', 'finalOn2xx', false],
  ['/rejects', 'finalOnceStarted', true],
  ['/next-error', 'finalOn2xx', false],
  ['/next-error', 'finalOnceStarted', true],
  ['/destroys-mid-stream', 'finalOn2xx', false],
  ['/destroys-mid-stream', 'finalOnceStarted', false],
  ['/ends-early', 'finalOn2xx', true],
  ['/refused', 'finalOn2xx', false],
  // Not a route's outcome: an auth middleware refused before any route ran.
  ['/refused', 'finalOnceStarted', false],
];

describe('@idem/express after the key was acquired', () => {
  it.each(cases)('%s under %s: settled at once (replayed: %s)', async (path, policy, replays) => {
    const name = path.slice(1);
    const before = runs.get(name) ?? 0;
    const key = `${name}-${policy}`;
    const first = await post(urls[policy], path, key);
    // The retry comes at once: a key left held would answer 409.
    const retry = await post(urls[policy], path, key);
    expect(retry.status).not.toBe(409);
    expect(retry.replayed).toBe(replays);
    if (replays) expect(retry).toMatchObject({ status: first.status, body: first.body });
    expect((runs.get(name) ?? 0) - before).toBe(replays ? 1 : 2);
  });
});

describe('@idem/express with an outcome policy that throws', () => {
  it('records the response (the route runs once, the retry replays it) and reports the error', async () => {
    const warnings: string[] = [];
    let ran = 0;
    const app = express();
    app.use(
      idempotency({
        store: createMemoryStore(),
        scope: () => ({ principal: 'tenant-a' }),
        isFinal: () => {
          throw new Error('policy bug');
        },
        onWarning: (message) => warnings.push(message),
      }),
    );
    app.post('/charge', (_req, res) => {
      ran++;
      res.status(201).type('text/plain').send('charged');
    });
    const server = app.listen(0, '127.0.0.1');
    try {
      await once(server, 'listening');
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const first = await post(url, '/charge', 'policy-throws');
      expect(first).toMatchObject({ status: 201, replayed: false, body: 'charged' });
      const retry = await post(url, '/charge', 'policy-throws');
      expect(retry).toMatchObject({ status: 201, replayed: true, body: 'charged' });
      expect(ran).toBe(1);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain('Error: policy bug');
    } finally {
      await once(server.close(), 'close');
    }
  });
});
