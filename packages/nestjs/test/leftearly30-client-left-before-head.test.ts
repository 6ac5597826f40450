import 'reflect-metadata';
import type { ServerResponse } from 'node:http';
import { leftBeforeHeadProbe, memoryStores, redisStores } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, HttpCode, Module, Post, Res } from '@nestjs/common';
import { afterAll, describe, it } from 'vitest';
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

    @Post('head-first')
    async headFirst(@Res() reply: ServerResponse | { raw: ServerResponse }) {
      const run = probe.begin();
      const res = 'raw' in reply ? reply.raw : reply;
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write(`begun ${run}.`);
      await probe.held(run);
      res.end('done');
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

describe.each<Platform>(['express', 'fastify'])(
  'leftearly30 nestjs on platform-%s: the client leaves while the handler works',
  (platform) => {
    for (const kind of [memoryStores(), redisStores()]) {
      it(`${kind.name} store, before the head: 409 past two leases, then the replay; run once`, async () => {
        const stores = await kind.setup();
        closers.push(stores.close);
        const { probe, url } = await start(platform, stores.create());
        await probe.check(url, '/jobs');
      });
    }

    it('after the head (@Res()): 409 until the handler ends, then the replay; run once', async () => {
      const { probe, url } = await start(platform, createMemoryStore());
      await probe.checkAfterHead(url, '/head-first');
    });
  },
);
