import 'reflect-metadata';
import type { ServerResponse } from 'node:http';
import {
  describeLeftBeforeHead,
  type LeftBeforeHeadProbe,
  leftBeforeHeadProbe,
} from '@idem/http-conformance';
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

function start(platform: Platform) {
  return async (probe: LeftBeforeHeadProbe, store: NestIdempotencyOptions['store']) => {
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
    return startNest(platform, JobsModule);
  };
}

for (const platform of ['express', 'fastify'] as const) {
  describeLeftBeforeHead(
    `leftearly30 nestjs on platform-${platform}: the client leaves before the head while the handler works`,
    LEASE,
    start(platform),
  );

  describe(`leftearly30 nestjs on platform-${platform}: the client leaves after the head`, () => {
    let close = async () => {};
    afterAll(() => close());
    it('@Res() handler still working: 409 until it ends, then the replay; run once', async () => {
      const probe = leftBeforeHeadProbe(LEASE);
      const app = await start(platform)(probe, createMemoryStore());
      close = app.close;
      await probe.checkAfterHead(app.url, '/head-first');
    });
  });
}
