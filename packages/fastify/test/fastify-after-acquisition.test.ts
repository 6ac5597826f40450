import { Readable } from 'node:stream';
import { finalOnceStarted } from '@idem/http';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyReply } from 'fastify';
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

async function* broken(): AsyncGenerator<string> {
  yield 'part one\n';
  await sleep(10);
  throw new Error('upstream broke');
}

const routes: Record<string, (reply: FastifyReply) => unknown> = {
  throws: async () => {
    run('throws');
    throw new Error('boom');
  },
  'sends-error': (reply) => {
    run('sends-error');
    return reply.send(new Error('boom'));
  },
  'stream-breaks': (reply) => {
    run('stream-breaks');
    return reply.type('text/plain').send(Readable.from(broken()));
  },
  'destroys-raw': async (reply) => {
    run('destroys-raw');
    reply.hijack();
    reply.raw.writeHead(200, { 'content-type': 'text/plain' });
    reply.raw.write('part one\n');
    await sleep(10);
    reply.raw.destroy(new Error('upstream broke'));
  },
  'ends-early': (reply) => {
    run('ends-early');
    return reply.code(201).send();
  },
};

const apps: ReturnType<typeof Fastify>[] = [];
const urls = { finalOn2xx: '', finalOnceStarted: '' };
beforeAll(async () => {
  for (const policy of ['finalOn2xx', 'finalOnceStarted'] as const) {
    const app = Fastify({ forceCloseConnections: true });
    apps.push(app);
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: (request) => ({ principal: request.headers['x-tenant'] ?? 'tenant-a' }),
      ...(policy === 'finalOnceStarted' ? { isFinal: finalOnceStarted } : {}),
      onWarning: () => {},
    });
    for (const [name, handler] of Object.entries(routes)) {
      app.post(`/${name}`, async (_request, reply) => handler(reply));
    }
    urls[policy] = await app.listen({ port: 0, host: '127.0.0.1' });
  }
});
afterAll(() => Promise.all(apps.map((app) => app.close())));

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
  ['/sends-error', 'finalOn2xx', false],
  ['/sends-error', 'finalOnceStarted', true],
  ['/stream-breaks', 'finalOn2xx', false],
  ['/stream-breaks', 'finalOnceStarted', false],
  ['/destroys-raw', 'finalOn2xx', false],
  ['/destroys-raw', 'finalOnceStarted', false],
  ['/ends-early', 'finalOn2xx', true],
];

describe('@idem/fastify after the key was acquired', () => {
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

describe('@idem/fastify with an outcome policy that throws', () => {
  it('records the response (the route runs once, the retry replays it) and reports the error', async () => {
    const warnings: string[] = [];
    let ran = 0;
    const app = Fastify({ forceCloseConnections: true });
    try {
      await app.register(idempotency, {
        store: createMemoryStore(),
        scope: () => ({ principal: 'tenant-a' }),
        isFinal: () => {
          throw new Error('policy bug');
        },
        onWarning: (message) => warnings.push(message),
      });
      app.post('/charge', async (_request, reply) => {
        ran++;
        return reply.code(201).type('text/plain').send('charged');
      });
      const url = await app.listen({ port: 0, host: '127.0.0.1' });
      const first = await post(url, '/charge', 'policy-throws');
      expect(first).toMatchObject({ status: 201, replayed: false, body: 'charged' });
      const retry = await post(url, '/charge', 'policy-throws');
      expect(retry).toMatchObject({ status: 201, replayed: true, body: 'charged' });
      expect(ran).toBe(1);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain('Error: policy bug');
    } finally {
      await app.close();
    }
  });
});
