import { randomUUID } from 'node:crypto';
import { Agent } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisStore } from '@idem/store-redis';
import { Redis } from 'ioredis';
import type { Context } from 'koa';
import { describe, expect, it } from 'vitest';
import { A, closeAfter, counting, serve, swallowed, twice, useRedis } from './rev35-kit.js';

// rev35s: adversarial review of the Koa mounted-twice pass-on (Symbol.for('idem.koa.running')):
// an outer idem that skips the request, or fails open, must leave the inner one to act; a flag
// must not outlive its request on a keep-alive socket. Real Koa servers on loopback.

const PREFIX = `rev35s:${randomUUID()}:`;
const redis = useRedis(PREFIX);

/** A Redis store on a port nobody listens on: every call fails at once. */
function deadStore() {
  const dead = new Redis({
    host: '127.0.0.1',
    port: 1,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    lazyConnect: true,
    retryStrategy: () => null,
  });
  dead.on('error', () => {});
  closeAfter(async () => dead.disconnect());
  return createRedisStore({ client: dead, keyPrefix: `rev35s:${randomUUID()}:` });
}

describe('rev35s koa: idem mounted twice, the outer one not holding', () => {
  it('the outer skips GET (its methods), the inner one covers GET: replayed, one run', async () => {
    const store = createMemoryStore();
    const { route, runs } = counting();
    const { url } = await serve(
      twice({ store, methods: ['POST'] }, { store, methods: ['GET', 'POST'] }, route),
    );
    const key = randomUUID();
    expect((await send(url, '/pay', { key })).status).toBe(201);
    const again = await send(url, '/pay', { key });
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(runs()).toBe(1);
  });

  it('keep-alive: a held request then one the outer skips (no outer key) on the same socket; the inner acts', async () => {
    const store = createMemoryStore();
    const { route, runs } = counting();
    const { url } = await serve(
      twice({ store, headerName: 'X-Outer-Key', required: false }, { store }, route),
    );
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const outerKey = randomUUID();
      // First: both keys, the outer holds its own (the inner one acts on Idempotency-Key).
      const first = await send(url, '/pay', {
        key: randomUUID(),
        body: A,
        headers: { 'x-outer-key': outerKey },
        agent,
      });
      expect(first.status).toBe(201);
      // Then on the same socket: only Idempotency-Key, the outer skips; the inner must hold it.
      const key = randomUUID();
      expect((await send(url, '/pay', { key, body: A, agent })).status).toBe(201);
      const again = await send(url, '/pay', { key, body: A, agent });
      expect(again.status).toBe(201);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(runs()).toBe(2);
    } finally {
      agent.destroy();
    }
  });

  it('the outer fails open (its Redis down): it holds nothing, the inner on memory replays', async () => {
    const down = deadStore();
    const store = createMemoryStore();
    const { route, runs } = counting();
    const { url } = await serve(twice({ store: down, failOpen: true }, { store }, route));
    const key = randomUUID();
    expect((await send(url, '/pay', { key, body: A })).status).toBe(201);
    const again = await send(url, '/pay', { key, body: A });
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(runs()).toBe(1);
  });

  it('the outer answers 503 (its store down, not failing open): the route never runs', async () => {
    const down = deadStore();
    const { route, runs } = counting();
    const { url } = await serve(twice({ store: down }, { store: createMemoryStore() }, route));
    const res = await send(url, '/pay', { key: randomUUID(), body: A });
    expect(res.status).toBe(503);
    expect(runs()).toBe(0);
  });

  it('the inner one with wait, same store and key: passes on; a concurrent duplicate is not run twice', async () => {
    const store = createMemoryStore();
    let runs = 0;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const route = async (ctx: Context) => {
      runs++;
      await gate;
      ctx.status = 201;
      ctx.body = { runs };
    };
    const { url } = await serve(twice({ store }, { store, wait: { timeoutMs: 3000 } }, route));
    const key = randomUUID();
    const first = send(url, '/pay', { key, body: A });
    for (let i = 0; i < 50 && runs === 0; i++) await new Promise((r) => setTimeout(r, 20));
    const dup = await send(url, '/pay', { key, body: A });
    expect(dup.status).toBe(409);
    release();
    expect((await first).status).toBe(201);
    const again = await send(url, '/pay', { key, body: A });
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(1);
  });
});

describe('rev35s koa: a throw swallowed upstream (ctx.respond = false), the answer after the key was freed', () => {
  for (const kind of ['memory', 'redis'] as const) {
    const storeOf = () =>
      kind === 'memory'
        ? createMemoryStore()
        : createRedisStore({ client: redis(), keyPrefix: `${PREFIX}${randomUUID()}:` });
    it(`${kind}: the client gone, the key freed, a retry runs and is recorded; the first run's late answer never replaces it`, async () => {
      let runs = 0;
      const { url } = await serve(
        swallowed(storeOf(), 200, async (ctx) => {
          const run = ++runs;
          const res = ctx.res;
          if (run === 1) {
            setTimeout(() => {
              if (res.destroyed) return;
              res.writeHead(201, { 'content-type': 'application/json' });
              res.end(JSON.stringify({ run }));
            }, 1_200);
            throw new Error('handed off, then failed');
          }
          ctx.status = 201;
          ctx.body = { run };
        }),
      );
      const key = randomUUID();
      await send(url, '/t', { key, body: A, timeoutMs: 100 }).catch(() => undefined);
      let again = await send(url, '/t', { key, body: A });
      for (let i = 0; i < 30 && again.status === 409; i++) {
        await sleep(50);
        again = await send(url, '/t', { key, body: A });
      }
      expect(again.status).toBe(201);
      // Freed within two leases (400 ms), long before the late answer at 1.2 s: the retry ran.
      const answered = JSON.parse(String(again.body)).run;
      expect(answered).toBe(2);
      // Past the first run's late answer: the record is whichever answered the retry.
      await sleep(1_400);
      const replay = await send(url, '/t', { key, body: A });
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(JSON.parse(String(replay.body)).run).toBe(answered);
      expect(runs).toBe(2);
    });
  }
});
