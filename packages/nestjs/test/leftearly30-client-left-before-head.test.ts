import 'reflect-metadata';
import type { ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { leftBeforeHeadProbe, REPLAYED, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisStore } from '@idem/store-redis';
import { Controller, HttpCode, Module, Post, Res } from '@nestjs/common';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent, type NestIdempotencyOptions } from '../src/index.js';
import { type Platform, startNest } from './scenario-app.js';

// leftearly30 FINDING (HIGH, exactly-once; fixed in @idem/http's recorder): a client that left
// before the head while the handler still worked (its own timeout during a slow call longer
// than the lease) had its retry run the handler a second time once two leases passed (409,
// 409, 409, 201), on both platforms. A response whose head has not started is a handler still
// working: its lease is renewed as for a client that stays (up to maxHoldMs).
// And past the head: a handler that wrote its head itself (`@Res()`) and still works is not a
// stuck body either: the interceptor holds the key while the handler's work runs (the
// recorder's `holdWhile`, as Koa's `next()`), where it was freed after two leases of silence.

const LEASE = 300;
const closers: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of closers.reverse()) await close();
});

async function start(platform: Platform, store: NestIdempotencyOptions['store']) {
  const probe = leftBeforeHeadProbe(LEASE);
  @Controller()
  @Idempotent()
  class JobsController {
    @Post('jobs')
    @HttpCode(201)
    async jobs() {
      return { run: await probe.work() };
    }
  }
  @Module({
    imports: [IdempotencyModule.forRoot({ store, scope: 'global', leaseMs: LEASE })],
    controllers: [JobsController],
  })
  class JobsModule {}
  const { url, close } = await startNest(platform, JobsModule);
  closers.push(close);
  return { probe, url };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A Nest app whose `@Res()` handler writes its head and a first chunk, then works until `release`. */
async function startHeadFirst(platform: Platform) {
  let runs = 0;
  let release!: () => void;
  const working = new Promise<void>((resolve) => {
    release = resolve;
  });
  @Controller()
  @Idempotent()
  class HeadFirstController {
    @Post('head-first')
    async headFirst(@Res() reply: ServerResponse | { raw: ServerResponse }) {
      runs += 1;
      const run = runs;
      const res = 'raw' in reply ? reply.raw : reply;
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write(`begun ${run}.`);
      // Only the first run works on; a second one (the old source's) ends at once.
      if (run === 1) await working;
      res.end('done');
    }
  }
  @Module({
    imports: [
      IdempotencyModule.forRoot({ store: createMemoryStore(), scope: 'global', leaseMs: LEASE }),
    ],
    controllers: [HeadFirstController],
  })
  class HeadFirstModule {}
  const { url, close } = await startNest(platform, HeadFirstModule);
  closers.push(close);
  return { url, runs: () => runs, release };
}

describe.each<Platform>(['express', 'fastify'])(
  'leftearly30 nestjs on platform-%s: the client leaves after the head while the handler works',
  (platform) => {
    it('retries past two leases get 409 until the handler ends, then the replay; run once', async () => {
      const app = await startHeadFirst(platform);
      const { hostname, port } = new URL(app.url);
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
      const retry = () => send(app.url, '/head-first', { key: 'head-first', body: { a: 1 } });
      const meanwhile: number[] = [];
      for (let i = 0; i < 10; i += 1) {
        await sleep(LEASE / 2);
        meanwhile.push((await retry()).status);
      }
      expect(app.runs()).toBe(1);
      expect(meanwhile).toEqual(meanwhile.map(() => 409));
      app.release();
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
      expect(app.runs()).toBe(1);
    });
  },
);

describe.each<Platform>(['express', 'fastify'])(
  'leftearly30 nestjs on platform-%s: the client leaves before the head while the handler works',
  (platform) => {
    it('memory store: retries past two leases get 409, then the replay; the handler ran once', async () => {
      const { probe, url } = await start(platform, createMemoryStore());
      await probe.check(url, '/jobs');
    });

    it('Redis store: the same', async () => {
      const client = new Redis({ host: '127.0.0.1', port: 6379, lazyConnect: true });
      await client.connect();
      closers.push(() => client.quit());
      const prefix = `leftearly30:nest-${platform}:${process.pid}:`;
      const { probe, url } = await start(platform, createRedisStore({ client, keyPrefix: prefix }));
      await probe.check(url, '/jobs');
    });
  },
);
