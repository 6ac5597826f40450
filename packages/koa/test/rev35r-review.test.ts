import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisStore } from '@idem/store-redis';
import type { Context } from 'koa';
import { describe, expect, it } from 'vitest';
import { A, counting, serve, swallowed, twice, useRedis } from './rev35-kit.js';

// rev35r: adversarial review of rev35k's changes (idem mounted twice passes on, a throw
// swallowed with ctx.respond = false) on real Koa servers on loopback, on the memory store and
// the real Redis (127.0.0.1:6379, under a random key prefix of this file's own).

const PREFIX = `rev35r:${randomUUID()}:`;
const redis = useRedis(PREFIX);

const redisStore = () =>
  createRedisStore({ client: redis(), keyPrefix: `${PREFIX}${randomUUID()}:` });

describe('rev35r koa: idem mounted twice, two configurations', () => {
  // FINDING (HIGH), fixed: since rev35k an inner idem middleware passes every request on once an
  // outer one holds a key, whatever its own store: an app-wide idem on a per-instance memory
  // store with the route's own on the shared Redis lost the Redis one's protection; a retry
  // that reached another instance ran the route again (before rev35k each held its own key in
  // its own store and the retry was replayed). Observed before the fix: runs 2, the retry 201
  // not replayed. Now the inner passes on only when the outer holds the same key in its store.
  it('outer on a per-instance memory store, inner on the shared Redis: a retry on another instance is replayed, one run', async () => {
    const shared = redisStore();
    const { route, runs } = counting();
    const one = await serve(twice({ store: createMemoryStore() }, { store: shared }, route));
    const two = await serve(twice({ store: createMemoryStore() }, { store: shared }, route));
    const key = randomUUID();
    expect((await send(one.url, '/pay', { key, body: A })).status).toBe(201);
    const again = await send(two.url, '/pay', { key, body: A });
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(runs()).toBe(1);
  });

  it('outer and inner on one store under different key headers: each key holds for its own header, one run', async () => {
    const store = createMemoryStore();
    const { route, runs } = counting();
    const { url } = await serve(twice({ store }, { store, headerName: 'X-Request-Id' }, route));
    const key = randomUUID();
    const rid = randomUUID();
    const first = await send(url, '/pay', { key, body: A, headers: { 'x-request-id': rid } });
    expect(first.status).toBe(201);
    // The same request id under a fresh Idempotency-Key: the inner one's key was used.
    const again = await send(url, '/pay', {
      key: randomUUID(),
      body: A,
      headers: { 'x-request-id': rid },
    });
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(runs()).toBe(1);
  });

  // Was FINDING (LOW), fixed: on one store with one key header, an inner middleware whose scope
  // is wider than the outer one's (the outer per tenant, the inner 'global') passed on while the
  // outer held the tenant's key, so the inner's global key was never held nor recorded: the same
  // key from another tenant ran the route again (runs 2). The inner one now passes on only under
  // the same `scope` option as the outer's (the same hook, or both 'global').
  it('one store, the outer per tenant, the inner global: the same key from another tenant is not run again', async () => {
    const store = createMemoryStore();
    const { route, runs } = counting();
    const tenant = (ctx: Context) => ({ principal: ctx.get('x-tenant') });
    const { url } = await serve(twice({ store, scope: tenant }, { store }, route));
    const key = randomUUID();
    expect((await send(url, '/pay', { key, body: A, tenant: 'a' })).status).toBe(201);
    await send(url, '/pay', { key, body: A, tenant: 'b' });
    expect(runs()).toBe(1);
  });

  for (const kind of ['memory', 'redis'] as const) {
    const storeOf = () => (kind === 'memory' ? createMemoryStore() : redisStore());
    it(`${kind}: the outer one skips (GET, not in its methods): the inner one acts, replays (the flag set by the POST before never leaks to it)`, async () => {
      const store = storeOf();
      const { route, runs } = counting();
      const { url } = await serve(twice({ store }, { store, methods: ['GET', 'POST'] }, route));
      const key = randomUUID();
      // POST: the outer holds, the inner passes; GET next with the same key: the inner acts.
      expect((await send(url, '/pay', { key, body: A })).status).toBe(201);
      const getKey = randomUUID();
      expect((await send(url, '/pay', { method: 'GET', key: getKey })).status).toBe(201);
      const get = await send(url, '/pay', { method: 'GET', key: getKey });
      expect(get.headers['idempotent-replayed']).toBe('true');
      expect(runs()).toBe(2);
    });

    it(`${kind}: the same store mounted twice, the inner under wait: duplicates wait on the outer and get its replay, one run`, async () => {
      const store = storeOf();
      let runs = 0;
      const route = async (ctx: Context) => {
        runs++;
        await sleep(100);
        ctx.status = 201;
        ctx.body = { runs };
      };
      const { url } = await serve(
        twice({ store, wait: { timeoutMs: 3_000 } }, { store, wait: { timeoutMs: 3_000 } }, route),
      );
      const key = randomUUID();
      const answers = await Promise.all(
        Array.from({ length: 6 }, () => send(url, '/pay', { key, body: A })),
      );
      expect(answers.map((answer) => answer.status)).toEqual(Array(6).fill(201));
      expect(runs).toBe(1);
    });
  }

  it('the outer one fails (its store down): 503, the inner one and the route never run', async () => {
    const down = createMemoryStore();
    const failing = new Proxy(down, {
      get(target, name, receiver) {
        const value = Reflect.get(target, name, receiver);
        if (name === 'acquire') return () => Promise.reject(new Error('store down'));
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const { route, runs } = counting();
    const { url } = await serve(twice({ store: failing }, { store: createMemoryStore() }, route));
    const answer = await send(url, '/pay', { key: randomUUID(), body: A });
    expect(answer.status).toBe(503);
    expect(runs()).toBe(0);
  });
});

describe('rev35r koa: a throw swallowed upstream with ctx.respond = false', () => {
  for (const kind of ['memory', 'redis'] as const) {
    const storeOf = () => (kind === 'memory' ? createMemoryStore() : redisStore());
    it(`${kind}: the route hands work off, then throws; the work answers within a lease after its client left: recorded, replayed, one run`, async () => {
      let runs = 0;
      const { url } = await serve(
        swallowed(storeOf(), 400, async (ctx) => {
          const run = ++runs;
          const res = ctx.res;
          setTimeout(() => {
            res.writeHead(201, { 'content-type': 'application/json' });
            res.end(JSON.stringify({ run }));
          }, 250);
          throw new Error('handed off, then failed');
        }),
      );
      const key = randomUUID();
      await send(url, '/t', { key, body: A, timeoutMs: 100 }).catch(() => undefined);
      await sleep(400);
      let again = await send(url, '/t', { key, body: A });
      for (let i = 0; i < 20 && again.status === 409; i++) {
        await sleep(100);
        again = await send(url, '/t', { key, body: A });
      }
      expect(again.status).toBe(201);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(runs).toBe(1);
    });

    it(`${kind}: the client stays: the key stays held (409) while it waits, its own answer comes from the handed-off work`, async () => {
      let runs = 0;
      const { url } = await serve(
        swallowed(storeOf(), 200, async (ctx) => {
          const run = ++runs;
          const res = ctx.res;
          setTimeout(() => {
            res.writeHead(201, { 'content-type': 'application/json' });
            res.end(JSON.stringify({ run }));
          }, 700);
          throw new Error('handed off, then failed');
        }),
      );
      const key = randomUUID();
      const first = send(url, '/t', { key, body: A });
      await sleep(500);
      expect((await send(url, '/t', { key, body: A })).status).toBe(409);
      expect((await first).status).toBe(201);
      expect((await send(url, '/t', { key, body: A })).headers['idempotent-replayed']).toBe('true');
      expect(runs).toBe(1);
    });
  }
});
