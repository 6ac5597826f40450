import { connect } from 'node:net';
import { leftBeforeHeadProbe, REPLAYED, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisStore } from '@idem/store-redis';
import Fastify, { type FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { type FastifyIdempotencyOptions, idempotency } from '../src/index.js';

// leftearly30 FINDING (HIGH, exactly-once; fixed in @idem/http's recorder): a client that left
// before the head while the route still worked (its own timeout during a slow call longer than
// the lease) had its retry run the route a second time once two leases passed (409, 409, 409,
// 201). A response whose head has not started is a handler still working: its lease is renewed
// as for a client that stays (up to maxHoldMs); retries get 409, then the replay.
// And past the head: a route that wrote its head itself (`reply.raw`, `reply.hijack()`) and
// still works is not a stuck body either: the plugin holds the key while the route's handler
// runs (the recorder's `holdWhile`, as Koa's `next()`), where it was freed after two leases.

const LEASE = 300;
const closers: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of closers.reverse()) await close();
});

async function start(store: FastifyIdempotencyOptions['store'], h2 = false) {
  const probe = leftBeforeHeadProbe(LEASE);
  const app: FastifyInstance = h2
    ? (Fastify({ http2: true }) as unknown as FastifyInstance)
    : Fastify({ forceCloseConnections: true });
  await app.register(idempotency, { store, scope: 'global', leaseMs: LEASE });
  app.post('/jobs', async (_request, reply) => {
    const run = await probe.work();
    return reply.code(201).send({ run });
  });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  closers.push(() => app.close());
  return { probe, url };
}

describe('leftearly30 fastify: the client leaves before the head while the route still works', () => {
  it('memory store: retries past two leases get 409, then the replay; the route ran once', async () => {
    const { probe, url } = await start(createMemoryStore());
    await probe.check(url, '/jobs');
  });

  it('Redis store: the same', async () => {
    const client = new Redis({ host: '127.0.0.1', port: 6379, lazyConnect: true });
    await client.connect();
    closers.push(() => client.quit());
    const { probe, url } = await start(
      createRedisStore({ client, keyPrefix: `leftearly30:fastify:${process.pid}:` }),
    );
    await probe.check(url, '/jobs');
  });

  it('HTTP/2: a stream reset before the head, the same', async () => {
    const { probe, url } = await start(createMemoryStore(), true);
    await probe.check(url, '/jobs', { http2: true });
  });
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('leftearly30 fastify: the client leaves after the head while the route still works', () => {
  for (const hijack of [false, true]) {
    it(`${hijack ? 'reply.hijack()' : 'reply.raw'}: retries past two leases get 409 until the route ends, then the replay; run once`, async () => {
      let runs = 0;
      let release!: () => void;
      const working = new Promise<void>((resolve) => {
        release = resolve;
      });
      const app = Fastify({ forceCloseConnections: true });
      await app.register(idempotency, {
        store: createMemoryStore(),
        scope: 'global',
        leaseMs: LEASE,
      });
      app.post('/head-first', async (_request, reply) => {
        runs += 1;
        const run = runs;
        if (hijack) reply.hijack();
        reply.raw.writeHead(200, { 'content-type': 'text/plain' });
        reply.raw.write(`begun ${run}.`);
        // Only the first run works on; a second one (the old source's) ends at once.
        if (run === 1) await working;
        reply.raw.end('done');
        return reply;
      });
      const url = await app.listen({ port: 0, host: '127.0.0.1' });
      closers.push(() => app.close());
      const { hostname, port } = new URL(url);
      const socket = connect(Number(port), hostname);
      socket.on('error', () => {});
      const head = new Promise<string>((resolve) =>
        socket.once('data', (data: Buffer) => resolve(data.toString())),
      );
      socket.write(
        'POST /head-first HTTP/1.1\r\nHost: a\r\nIdempotency-Key: head-first\r\n' +
          'Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}',
      );
      expect(await head).toMatch(/^HTTP\/1\.1 200/);
      socket.destroy();
      const retry = () => send(url, '/head-first', { key: 'head-first', body: { a: 1 } });
      const meanwhile: number[] = [];
      for (let i = 0; i < 10; i += 1) {
        await sleep(LEASE / 2);
        meanwhile.push((await retry()).status);
      }
      expect(runs).toBe(1);
      expect(meanwhile).toEqual(meanwhile.map(() => 409));
      release();
      let last = await retry();
      for (let i = 0; i < 100 && last.status === 409; i += 1) {
        await sleep(20);
        last = await retry();
      }
      expect([last.status, last.headers[REPLAYED], last.body.toString()]).toEqual([
        200,
        'true',
        'begun 1.done',
      ]);
      expect(runs).toBe(1);
    });
  }
});
