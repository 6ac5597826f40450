import { randomUUID } from 'node:crypto';
import { Agent } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { HttpIdempotencyOptions } from '@idem/http';
import { listening, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisStore } from '@idem/store-redis';
import { bodyParser } from '@koa/bodyparser';
import Router from '@koa/router';
import { Redis } from 'ioredis';
import Koa, { type Context } from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getIdempotency, idempotency } from '../src/index.js';

// rev35k: adversarial review of @idem/koa on real Koa servers on loopback, on the memory store
// and the real Redis store (127.0.0.1:6379, under a random key prefix of this file's own).

const PREFIX = `rev35k:${randomUUID()}:`;
let redis: Redis;
const closers: (() => Promise<unknown>)[] = [];

beforeAll(() => {
  redis = new Redis({ host: '127.0.0.1', port: 6379, lazyConnect: false, maxRetriesPerRequest: 1 });
});
afterAll(async () => {
  for (const close of closers.reverse()) await close();
  // Only this file's own keys (its random prefix), counted and bounded.
  const keys = await redis.keys(`${PREFIX}*`);
  if (keys.length > 0 && keys.length < 10_000) await redis.del(...keys);
  redis.disconnect();
});

type StoreKind = 'memory' | 'redis';
const STORES: StoreKind[] = ['memory', 'redis'];

function storeOf(kind: StoreKind) {
  return kind === 'memory'
    ? createMemoryStore()
    : createRedisStore({ client: redis, keyPrefix: `${PREFIX}${randomUUID()}:` });
}

/** A Koa app with idem mounted by `app.use` (tenant from a header), then `routes`. */
async function start(
  kind: StoreKind,
  routes: (app: Koa) => void,
  options: Partial<HttpIdempotencyOptions<Context>> = {},
  before?: (app: Koa) => void,
) {
  const app = new Koa();
  app.silent = true;
  before?.(app);
  app.use(
    idempotency({
      store: storeOf(kind),
      scope: (ctx) => ({ principal: ctx.get('x-tenant') || 'anon' }),
      onWarning: () => {},
      ...options,
    } as HttpIdempotencyOptions<Context>),
  );
  routes(app);
  const server = app.listen(0, '127.0.0.1');
  const running = await listening(server);
  closers.push(running.close);
  return { ...running, server, port: (server.address() as AddressInfo).port };
}

/** Raw bytes on one connection; resolves with all that came back once it closes (bound 5 s). */
function rawExchange(port: number, bytes: string | Buffer, endAfterMs?: number) {
  return new Promise<string>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const timer = setTimeout(() => socket.destroy(), 5_000);
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      data += chunk;
    });
    socket.on('error', reject);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
    socket.write(bytes);
    if (endAfterMs !== undefined) setTimeout(() => socket.end(), endAfterMs);
  });
}

const statuses = (text: string) =>
  [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));

describe.each(STORES)('rev35k koa (%s store): exactly once', (kind) => {
  it('ctx.respond = false, the response written after next() settled: replayed, run once', async () => {
    let runs = 0;
    const { url } = await start(kind, (app) =>
      app.use((ctx) => {
        runs++;
        ctx.respond = false;
        const res = ctx.res;
        setTimeout(() => {
          res.writeHead(201, { 'content-type': 'text/plain' });
          res.write('late ');
          setTimeout(() => res.end(`answer ${runs}`), 30);
        }, 50);
      }),
    );
    const key = randomUUID();
    const first = send(url, '/late', { key, body: { a: 1 } });
    await sleep(20);
    const during = await send(url, '/late', { key, body: { a: 1 } });
    expect(during.status).toBe(409);
    const done = await first;
    expect(done.status).toBe(201);
    expect(done.body.toString()).toBe('late answer 1');
    const again = await send(url, '/late', { key, body: { a: 1 } });
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body.toString()).toBe('late answer 1');
    expect(runs).toBe(1);
  });

  it('middleware after idem that swaps a stream body for another after await: the replay is what went out', async () => {
    let runs = 0;
    const { url } = await start(kind, (app) => {
      app.use(async (ctx, next) => {
        await next();
        // Replaces the route's stream with a Buffer after the route returned.
        if (ctx.body instanceof Readable) {
          (ctx.body as Readable).destroy();
          ctx.body = Buffer.from(`wrapped ${runs}`);
          ctx.status = 202;
        }
      });
      app.use(async (ctx) => {
        runs++;
        await sleep(5);
        ctx.status = 201;
        ctx.body = Readable.from(['a', 'b', 'c']);
      });
    });
    const key = randomUUID();
    const first = await send(url, '/x', { key, body: { a: 1 } });
    expect(first.status).toBe(202);
    expect(first.body.toString()).toBe('wrapped 1');
    const again = await send(url, '/x', { key, body: { a: 1 } });
    expect(again.status).toBe(202);
    expect(again.body.toString()).toBe('wrapped 1');
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(1);
  });

  it('ctx.body = null after an await: the replay is the same empty answer, run once', async () => {
    let runs = 0;
    const { url } = await start(kind, (app) =>
      app.use(async (ctx) => {
        runs++;
        ctx.body = { soon: true };
        await sleep(5);
        ctx.body = null;
      }),
    );
    const key = randomUUID();
    const first = await send(url, '/n', { key, body: { a: 1 } });
    expect(first.status).toBe(200);
    const again = await send(url, '/n', { key, body: { a: 1 } });
    expect(again.status).toBe(first.status);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body.toString()).toBe(first.body.toString());
    expect(runs).toBe(1);
  });

  it('a stream body that errors halfway after an await: never a success, a retry runs again (once)', async () => {
    let runs = 0;
    const { url } = await start(kind, (app) =>
      app.use(async (ctx) => {
        const run = ++runs;
        await sleep(5);
        ctx.status = 200;
        ctx.body = Readable.from(
          (async function* () {
            yield 'part one;';
            await sleep(20);
            if (run === 1) throw new Error('boom halfway');
            yield 'part two';
          })(),
        );
      }),
    );
    const key = randomUUID();
    const first = await send(url, '/s', { key, body: { a: 1 } });
    expect(first.complete).toBe(false);
    const second = await send(url, '/s', { key, body: { a: 1 } });
    expect(second.status).toBe(200);
    expect(second.complete).toBe(true);
    expect(second.headers['idempotent-replayed']).toBeUndefined();
    expect(second.body.toString()).toBe('part one;part two');
    const third = await send(url, '/s', { key, body: { a: 1 } });
    expect(third.headers['idempotent-replayed']).toBe('true');
    expect(third.body.toString()).toBe('part one;part two');
    expect(runs).toBe(2);
  });

  it('a client that leaves halfway through sending its body takes no key: the whole retry runs once', async () => {
    let runs = 0;
    const { url, port } = await start(kind, (app) =>
      app.use((ctx) => {
        runs++;
        ctx.status = 201;
        ctx.body = { runs };
      }),
    );
    const key = randomUUID();
    const body = JSON.stringify({ a: 'x'.repeat(100) });
    await rawExchange(
      port,
      `POST /u HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 20)}`,
      50,
    );
    const retry = await send(url, '/u', { key, body: JSON.parse(body) });
    expect(retry.status).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    const again = await send(url, '/u', { key, body: JSON.parse(body) });
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(1);
  });

  it('a body that never ends holds no key: the same key with the whole body runs meanwhile', async () => {
    let runs = 0;
    const { url, port } = await start(kind, (app) =>
      app.use((ctx) => {
        runs++;
        ctx.status = 201;
        ctx.body = { runs };
      }),
    );
    const key = randomUUID();
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => {});
    socket.write(
      `POST /never HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n{"a"`,
    );
    await sleep(50);
    const other = await send(url, '/never', { key, body: { b: 1 } });
    expect(other.status).toBe(201);
    socket.destroy();
    expect(runs).toBe(1);
  });

  it('pipelined on one connection: the same key twice runs once (409 or replay), two keys run apart', async () => {
    let runs = 0;
    const { port } = await start(kind, (app) =>
      app.use(async (ctx) => {
        const run = ++runs;
        await sleep(30);
        ctx.status = 201;
        ctx.body = `run ${run} ${ctx.get('idempotency-key')}`;
      }),
    );
    const k1 = `k1-${randomUUID()}`;
    const k2 = `k2-${randomUUID()}`;
    const req = (key: string, close = false) =>
      `POST /p HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n${close ? 'Connection: close\r\n' : ''}\r\n{}`;
    const out = await rawExchange(port, req(k1) + req(k1) + req(k2) + req(k1, true));
    const codes = statuses(out);
    expect(codes).toHaveLength(4);
    expect(codes[0]).toBe(201);
    expect([201, 409]).toContain(codes[1]);
    expect(codes[2]).toBe(201);
    // Node parses pipelined requests at once: the last one may come while the first runs.
    expect([201, 409]).toContain(codes[3]);
    expect(out).toContain(`run 1 ${k1}`);
    expect(out).toContain(`${k2}`);
    expect(out).not.toMatch(new RegExp(`run \\d ${k1}[\\s\\S]*run [2-9] ${k1}`));
    expect(runs).toBe(2);
  });

  it('keep-alive: a later request on the same connection never sees the earlier one’s execution context', async () => {
    const seen: unknown[] = [];
    const { url } = await start(kind, (app) =>
      app.use((ctx) => {
        seen.push(getIdempotency(ctx)?.key ?? null);
        ctx.status = ctx.method === 'POST' ? 201 : 200;
        ctx.body = { method: ctx.method };
      }),
    );
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const key = randomUUID();
      const a = await send(url, '/k', { key, body: { a: 1 }, agent });
      const b = await send(url, '/k', { method: 'GET', agent });
      const c = await send(url, '/k', { key: null, body: { a: 1 }, agent });
      expect(a.status).toBe(201);
      expect(b.status).toBe(200);
      expect(c.status).toBe(400);
      expect(seen).toEqual([key, null]);
    } finally {
      agent.destroy();
    }
  });
});

describe.each(STORES)('rev35k koa (%s store): isolation', (kind) => {
  it('the same key and body from two tenants: two runs, each replays its own', async () => {
    let runs = 0;
    const { url } = await start(kind, (app) =>
      app.use((ctx) => {
        runs++;
        ctx.status = 201;
        ctx.body = { tenant: ctx.get('x-tenant'), run: runs };
      }),
    );
    const key = randomUUID();
    const a = await send(url, '/t', { key, body: { a: 1 }, tenant: 'A' });
    const b = await send(url, '/t', { key, body: { a: 1 }, tenant: 'B' });
    const a2 = await send(url, '/t', { key, body: { a: 1 }, tenant: 'A' });
    const b2 = await send(url, '/t', { key, body: { a: 1 }, tenant: 'B' });
    expect(JSON.parse(a.body.toString())).toEqual({ tenant: 'A', run: 1 });
    expect(JSON.parse(b.body.toString())).toEqual({ tenant: 'B', run: 2 });
    expect(a2.body.toString()).toBe(a.body.toString());
    expect(b2.body.toString()).toBe(b.body.toString());
    expect(runs).toBe(2);
  });

  it('an upstream router that matched a catch-all route first: two routes never share an answer', async () => {
    let runs = 0;
    const { url } = await start(
      kind,
      (app) => {
        const router = new Router();
        router.post('/charges', (ctx) => {
          runs++;
          ctx.status = 201;
          ctx.body = { kind: 'charge' };
        });
        router.post('/refunds', (ctx) => {
          runs++;
          ctx.status = 201;
          ctx.body = { kind: 'refund' };
        });
        app.use(router.routes());
      },
      {},
      (app) => {
        // An auth router mounted first: it matches every path and passes on.
        const auth = new Router();
        auth.all('/{*rest}', async (_ctx, next) => {
          await next();
        });
        app.use(auth.routes());
      },
    );
    const key = randomUUID();
    const charge = await send(url, '/charges', { key, body: { amount: 1 } });
    expect(charge.status).toBe(201);
    const refund = await send(url, '/refunds', { key, body: { amount: 1 } });
    // Either refused (422) or run as its own; never the charge's answer.
    expect(refund.body.toString()).not.toContain('charge');
    expect([201, 422]).toContain(refund.status);
    expect(runs).toBe(refund.status === 201 ? 2 : 1);
  });
});

describe.each(STORES)('rev35k koa (%s store): bad input', (kind) => {
  async function app() {
    let runs = 0;
    const running = await start(kind, (koa) => {
      koa.use(bodyParser());
      koa.use((ctx) => {
        runs++;
        ctx.status = 201;
        ctx.body = { got: ctx.request.body ?? null };
      });
    });
    return { ...running, runs: () => runs };
  }

  it('invalid JSON (idem before the parser): a 4xx, nothing kept: the correct body then runs once', async () => {
    const { url, runs } = await app();
    const key = randomUUID();
    const bad = await send(url, '/j', {
      key,
      body: Buffer.from('{"a":'),
      headers: { 'content-type': 'application/json' },
    });
    expect(bad.status).toBeGreaterThanOrEqual(400);
    expect(bad.status).toBeLessThan(500);
    const good = await send(url, '/j', { key, body: { a: 1 } });
    expect(good.status).toBe(201);
    const again = await send(url, '/j', { key, body: { a: 1 } });
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(runs()).toBe(1);
  });

  it.each([
    ['application/json; charset=utf-16', Buffer.from('{"a":1}', 'utf16le')],
    ['application/json; charset=latin1', Buffer.from('{"a":"\u00e9"}', 'latin1')],
    ['application/json', Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d])],
    ['application/x-www-form-urlencoded', Buffer.from('{"a":1}')],
    ['multipart/form-data', Buffer.from('--x\r\n')],
    ['text/plain; charset=nonsense', Buffer.from('hi')],
    ['application/json; charset=', Buffer.from('{}')],
    ['', Buffer.from('{}')],
  ])('content-type %j: a clear answer (never a 5xx), never run twice', async (type, bytes) => {
    const { url, runs } = await app();
    const key = randomUUID();
    const headers = type === '' ? {} : { 'content-type': type };
    const one = await send(url, '/c', { key, body: bytes, headers });
    const two = await send(url, '/c', { key, body: bytes, headers });
    expect(one.status).toBeLessThan(500);
    expect(two.status).toBeLessThan(500);
    expect(runs()).toBeLessThanOrEqual(1);
    if (one.status === 201) expect(two.headers['idempotent-replayed']).toBe('true');
  });

  it.each([
    ['256 characters', 'k'.repeat(256)],
    ['a tab inside', 'a\tb'],
    ['spaces only', '   '],
    ['an empty quoted string', '""'],
    ['an unterminated quote', '"abc'],
    ['a comma', 'a,b'],
    ['two quoted items', '"a", "b"'],
    ['a byte past 0x7F', 'caf\u00e9'],
    ['a backslash bare', 'a\\b'],
  ])('key with %s: 400 problem, nothing run', async (_what, key) => {
    const { url, runs } = await app();
    const answer = await send(url, '/k', { key, body: { a: 1 } });
    expect(answer.status).toBe(400);
    expect(String(answer.headers['content-type'])).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(answer.body.toString()).type).toBeTruthy();
    expect(runs()).toBe(0);
  });

  it('two Idempotency-Key header lines (even equal ones): 400, nothing run', async () => {
    const { url, runs } = await app();
    for (const keys of [
      ['a', 'b'],
      ['a', 'a'],
      ['"a"', '"a"'],
      ['a', ''],
    ]) {
      const answer = await send(url, '/k', { key: keys, body: { a: 1 } });
      expect(answer.status, JSON.stringify(keys)).toBe(400);
    }
    expect(runs()).toBe(0);
  });

  it('a huge Content-Length: 413 problem at once, nothing run, the connection not held', async () => {
    const { port, runs } = await app();
    const out = await rawExchange(
      port,
      `POST /big HTTP/1.1\r\nHost: a\r\nIdempotency-Key: big\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{`,
      500,
    );
    expect(statuses(out)[0]).toBe(413);
    expect(out).toMatch(/application\/problem\+json/);
    expect(runs()).toBe(0);
  });

  it('headers past the server limit: 431 from Node, nothing run', async () => {
    const { url, runs } = await app();
    const answer = await send(url, '/h', {
      key: 'h',
      body: { a: 1 },
      headers: { 'x-big': 'x'.repeat(20_000) },
    }).catch(() => ({ status: 431 }));
    expect(answer.status).toBe(431);
    expect(runs()).toBe(0);
  });

  it('HEAD and OPTIONS with a key pass through and take no key: the POST after them runs once', async () => {
    const { url, runs } = await app();
    const key = randomUUID();
    const head = await send(url, '/o', { method: 'HEAD', key });
    const options = await send(url, '/o', { method: 'OPTIONS', key });
    expect(head.status).toBe(201);
    expect(options.status).toBe(201);
    const post = await send(url, '/o', { key, body: { a: 1 } });
    expect(post.status).toBe(201);
    expect(post.headers['idempotent-replayed']).toBeUndefined();
    expect(runs()).toBe(3);
  });
});

describe('rev35k koa: configuration and connections', () => {
  // Was FINDING (LOW), fixed (an idem middleware that finds one before it holding a key passes on): idem mounted twice on one request (app.use and again on the route, both ways the README shows) answers every keyed request 409 in-progress for ever: the outer one holds the key, the inner one finds it held (same principal, same route name, same fingerprint), its 409 is not final so the outer one releases, and the route never runs; clients told Retry-After: 1 retry without end.
  it('mounted twice (app.use and on the route): a keyed request runs, never answered 409 for ever', async () => {
    let runs = 0;
    const warnings: string[] = [];
    const store = createMemoryStore();
    const options = {
      store,
      scope: 'global' as const,
      onWarning: (message: string) => warnings.push(message),
    };
    const app = new Koa();
    app.silent = true;
    app.use(idempotency(options));
    const router = new Router();
    router.post('/charges', idempotency(options), (ctx) => {
      runs++;
      ctx.status = 201;
      ctx.body = { runs };
    });
    // The outer one leaves PUT alone: the one on the route (PUT in its methods) protects it.
    router.put('/charges', idempotency({ ...options, methods: ['PUT'] }), (ctx) => {
      runs++;
      ctx.status = 201;
      ctx.body = { runs };
    });
    app.use(router.routes());
    const server = app.listen(0, '127.0.0.1');
    const { url, close } = await listening(server);
    closers.push(close);
    const key = randomUUID();
    const first = await send(url, '/charges', { key, body: { a: 1 } });
    const second = await send(url, '/charges', { key, body: { a: 1 } });
    expect(first.status).toBe(201);
    expect(second.status).toBe(201);
    expect(second.headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(1);
    expect(warnings.filter((text) => text.includes('Mounted twice'))).toHaveLength(1);
    const put = await send(url, '/charges', { method: 'PUT', key, body: { a: 1 } });
    const putAgain = await send(url, '/charges', { method: 'PUT', key, body: { a: 1 } });
    expect(put.status).toBe(201);
    expect(putAgain.headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(2);
  });

  it('keep-alive: 60 keyed exchanges (runs, 409s, replays, 422s, 400s) leave no listener behind on the connection', async () => {
    let gate: (() => void) | undefined;
    const sockets: import('node:net').Socket[] = [];
    const { url, server } = await start(
      'memory',
      (app) =>
        app.use(async (ctx) => {
          if (ctx.path === '/slow') await new Promise<void>((resolve) => (gate = resolve));
          ctx.status = 201;
          ctx.body = { ok: true };
        }),
      { wait: { timeoutMs: 20 } } as Partial<HttpIdempotencyOptions<Context>>,
    );
    server.on('connection', (socket) => sockets.push(socket));
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const other = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const counts = () => {
        const socket = sockets[0] as import('node:net').Socket;
        return ['close', 'error', 'end', 'data', 'drain', 'timeout', 'finish'].map((event) =>
          socket.listenerCount(event),
        );
      };
      // The slow one holds its key on its own connection; the keep-alive one asks again and again.
      const slowKey = randomUUID();
      const slow = send(url, '/slow', { key: slowKey, body: { a: 1 }, agent: other });
      await sleep(20);
      await send(url, '/fast', { key: randomUUID(), body: { a: 1 }, agent });
      const baseline = counts();
      for (let i = 0; i < 12; i++) {
        const key = `${slowKey}-${i}`;
        expect((await send(url, '/fast', { key, body: { i }, agent })).status).toBe(201);
        expect((await send(url, '/fast', { key, body: { i }, agent })).status).toBe(201);
        expect((await send(url, '/fast', { key, body: { i: -1 }, agent })).status).toBe(422);
        expect((await send(url, '/slow', { key: slowKey, body: { a: 1 }, agent })).status).toBe(
          409,
        );
        expect((await send(url, '/fast', { key: 'a,b', body: { i }, agent })).status).toBe(400);
      }
      expect(counts()).toEqual(baseline);
      gate?.();
      expect((await slow).status).toBe(201);
    } finally {
      agent.destroy();
      other.destroy();
    }
  });
});

/** A redis-server of this file's own on a free port (stopped by its PID). */
async function privateRedis() {
  const { spawn } = await import('node:child_process');
  const { createServer } = await import('node:net');
  const port = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  const client = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, lazyConnect: true });
  client.on('error', () => {});
  for (let i = 0; i < 50; i++) {
    try {
      await client.connect();
      break;
    } catch {
      await sleep(50);
    }
  }
  closers.push(async () => {
    client.disconnect();
    child.kill('SIGCONT');
    child.kill('SIGKILL');
  });
  return {
    client,
    pause: () => child.kill('SIGSTOP'),
    resume: () => child.kill('SIGCONT'),
  };
}

describe('rev35k koa: the Redis store silent, two servers on one Redis', () => {
  it('Redis silent at acquire: 503 with Retry-After within the store time limit, nothing run; back: runs once', async () => {
    const own = await privateRedis();
    let runs = 0;
    const app = new Koa();
    app.silent = true;
    app.use(
      idempotency({
        store: createRedisStore({ client: own.client, keyPrefix: `${PREFIX}silent:` }),
        scope: 'global',
        storeTimeoutMs: 300,
        onWarning: () => {},
      }),
    );
    app.use((ctx) => {
      runs++;
      ctx.status = 201;
      ctx.body = { runs };
    });
    const { url, close } = await listening(app.listen(0, '127.0.0.1'));
    closers.push(close);
    const key = randomUUID();
    own.pause();
    try {
      const down = await send(url, '/r', { key, body: { a: 1 }, timeoutMs: 4_000 });
      expect(down.status).toBe(503);
      expect(down.headers['retry-after']).toBeDefined();
      expect(runs).toBe(0);
    } finally {
      own.resume();
    }
    let up = await send(url, '/r', { key, body: { a: 1 } });
    for (let i = 0; i < 20 && up.status === 503; i++) {
      await sleep(100);
      up = await send(url, '/r', { key, body: { a: 1 } });
    }
    expect(up.status).toBe(201);
    const again = await send(url, '/r', { key, body: { a: 1 } });
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(1);
  });

  it('Redis silent while the outcome is recorded: the first response is aborted (documented), retries never run it again', async () => {
    const own = await privateRedis();
    let runs = 0;
    let started: () => void = () => {};
    const begun = new Promise<void>((resolve) => (started = resolve));
    const app = new Koa();
    app.silent = true;
    app.use(
      idempotency({
        store: createRedisStore({ client: own.client, keyPrefix: `${PREFIX}silent2:` }),
        scope: 'global',
        storeTimeoutMs: 300,
        leaseMs: 1_500,
        onWarning: () => {},
      }),
    );
    app.use(async (ctx) => {
      runs++;
      started();
      await sleep(100);
      ctx.status = 201;
      ctx.body = { runs };
    });
    const { url, close } = await listening(app.listen(0, '127.0.0.1'));
    closers.push(close);
    const key = randomUUID();
    const first = send(url, '/r', { key, body: { a: 1 }, timeoutMs: 8_000 }).then(
      (exchange) => exchange,
      () => undefined,
    );
    await begun;
    own.pause();
    const during: number[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        during.push((await send(url, '/r', { key, body: { a: 1 }, timeoutMs: 4_000 })).status);
      }
    } finally {
      own.resume();
    }
    const answer = await first;
    // Never a complete success that was not recorded.
    if (answer?.complete) expect(answer.status).toBe(201);
    expect(during.every((status) => status === 503 || status === 409)).toBe(true);
    // Back: 409 while the completion is retried, then the replay; never a second run.
    let again = await send(url, '/r', { key, body: { a: 1 } });
    for (let i = 0; i < 40 && again.status !== 201; i++) {
      expect([409, 503]).toContain(again.status);
      await sleep(100);
      again = await send(url, '/r', { key, body: { a: 1 } });
    }
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(JSON.parse(again.body.toString())).toEqual({ runs: 1 });
    expect(runs).toBe(1);
  });

  it('two Koa servers on one Redis: a duplicate on the other server mid-stream never runs, then replays the same bytes', async () => {
    const keyPrefix = `${PREFIX}shared:`;
    let runs = 0;
    const make = async () => {
      const app = new Koa();
      app.silent = true;
      app.use(
        idempotency({
          store: createRedisStore({ client: redis, keyPrefix }),
          scope: 'global',
          onWarning: () => {},
        }),
      );
      app.use((ctx) => {
        const run = ++runs;
        ctx.status = 200;
        ctx.type = 'text/event-stream';
        ctx.body = Readable.from(
          (async function* () {
            for (let i = 0; i < 5; i++) {
              yield `data: run ${run} event ${i}\n\n`;
              await sleep(40);
            }
          })(),
        );
      });
      const running = await listening(app.listen(0, '127.0.0.1'));
      closers.push(running.close);
      return running.url;
    };
    const a = await make();
    const b = await make();
    const key = randomUUID();
    const first = send(a, '/sse', { key, body: { a: 1 } });
    await sleep(60);
    const dup = await send(b, '/sse', { key, body: { a: 1 } });
    const done = await first;
    expect(done.status).toBe(200);
    expect([200, 409]).toContain(dup.status);
    if (dup.status === 200) expect(dup.body.toString()).toBe(done.body.toString());
    const replay = await send(b, '/sse', { key, body: { a: 1 } });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.toString()).toBe(done.body.toString());
    expect(runs).toBe(1);
  });
});

describe.each(STORES)('rev35k koa (%s store): JSON bodies that parse alike', (kind) => {
  const pairs: [string, string, string][] = [
    ['__proto__ member', '{"__proto__":{"x":1},"a":1}', '{"a":1}'],
    ['__proto__ value differs', '{"__proto__":{"x":1}}', '{"__proto__":{"x":2}}'],
    ['lone surrogates', '{"a":"\\ud800"}', '{"a":"\\udbff"}'],
    ['a lone surrogate and U+FFFD', '{"a":"\\ud800"}', '{"a":"\\ufffd"}'],
    ['numbers past double range', '{"a":1e400}', '{"a":2e400}'],
    ['tiny numbers that round to 0', '{"a":1e-400}', '{"a":0}'],
    ['a member named constructor', '{"constructor":1}', '{"constructor":2}'],
  ];
  for (const parser of ['before', 'after'] as const) {
    it.each(pairs)(
      `idem ${parser} @koa/bodyparser, %s: told apart (422 or refused), never replayed one for the other`,
      async (_what, one, two) => {
        let runs = 0;
        const app = new Koa();
        app.silent = true;
        const idem = idempotency({ store: storeOf(kind), scope: 'global', onWarning: () => {} });
        if (parser === 'after') app.use(bodyParser());
        app.use(idem);
        if (parser === 'before') app.use(bodyParser());
        app.use((ctx) => {
          runs++;
          ctx.status = 201;
          ctx.body = { run: runs };
        });
        const { url, close } = await listening(app.listen(0, '127.0.0.1'));
        closers.push(close);
        const key = randomUUID();
        const headers = { 'content-type': 'application/json' };
        const a = await send(url, '/j', { key, body: Buffer.from(one), headers });
        const b = await send(url, '/j', { key, body: Buffer.from(two), headers });
        if (a.status === 201) {
          expect(b.headers['idempotent-replayed']).toBeUndefined();
          expect(b.status === 422 || b.status >= 400).toBe(true);
        }
        expect(runs).toBeLessThanOrEqual(1);
      },
    );
  }
});
