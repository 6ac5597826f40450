import 'reflect-metadata';
import type { ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, Post, Res, UseGuards } from '@nestjs/common';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import {
  afterHeld,
  mountOuterTimeout,
  OUTER_TIMEOUTS,
  type Outer,
  workGate,
} from './review-kit.js';
import { outerTimeout, type Platform, startNest, TenantGuard } from './scenario-app.js';

// nest33 FINDING (HIGH, exactly-once): a timeout outside Nest's interceptor (Express middleware
// before Nest's router answering 503, a Fastify onRequest hook, or an interceptor outside this
// one) over a handler that writes its response itself (`@Res()`): the key was held while the
// handler worked, then judged as the handler's own answer, and the 503 released it under
// finalOn2xx: a retry ran the handler a second time. On Express the handler's own write after
// the 503 (`res.status(201).json()`) throws ERR_HTTP_HEADERS_SENT, which counted as a failure and
// released the key too. Now: held while it works, then the `answered_outside` marker when it ran
// on past the turn the outside answer went out in, or tried to write after it (it reached its
// answer: its work ran); released when it threw before reaching its answer.

let runs = 0;
let failing = 0;
const WORK_MS = 300;
const gate = workGate();

type ExpressLikeRes = ServerResponse & {
  status(code: number): { json(body: unknown): unknown; send(body: unknown): unknown };
  sent?: boolean;
};

@Controller()
@UseGuards(TenantGuard)
class ResController {
  /** Writes its answer when its work is done, whatever went out meanwhile (the common shape). */
  @Post('res-writes')
  @Idempotent()
  async writes(@Res() res: ExpressLikeRes) {
    runs += 1;
    await Promise.all([sleep(WORK_MS), gate.pass()]);
    res.status(201).send({ charged: true });
  }

  /** Checks whether something answered already before writing. */
  @Post('res-checks')
  @Idempotent()
  async checks(@Res() res: ExpressLikeRes) {
    runs += 1;
    await Promise.all([sleep(WORK_MS), gate.pass()]);
    const raw = (res as { raw?: ServerResponse }).raw ?? res;
    if (!raw.headersSent) res.status(201).send({ charged: true });
  }

  /** Throws before its answer: its work failed, a retry may run it. */
  @Post('res-throws')
  @Idempotent()
  async throws(@Res() _res: ExpressLikeRes) {
    failing += 1;
    await Promise.all([sleep(WORK_MS), gate.pass()]);
    throw new Error('the charge failed');
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [ResController],
})
class ResModule {}

const mounted = (platform: Platform, outer: Outer) =>
  mountOuterTimeout(outer, (app) =>
    outerTimeout(platform)(app as NestExpressApplication & NestFastifyApplication),
  );

describe.each(OUTER_TIMEOUTS)(
  'nest33 nestjs on %s: a timeout %s over a @Res() handler',
  (platform, outer) => {
    for (const path of ['/res-writes', '/res-checks']) {
      it(`${path}: held (409) while it works, then the answered_outside marker (500), never a second run`, async () => {
        const { url, close } = await startNest(platform, ResModule, mounted(platform, outer));
        try {
          const before = runs;
          const key = `nest33-${platform}-${outer}-${path}-${process.pid}`;
          const open = gate.close();
          const first = await send(url, path, { key, body: {} });
          expect([408, 503]).toContain(first.status);
          expect((await send(url, path, { key, body: {} })).status).toBe(409);
          open();
          // Its work ends (bounded wait: the retries go on until the key is no longer held).
          const last = await afterHeld(() => send(url, path, { key, body: {} }));
          expect(last).toBe(500);
          expect(runs - before).toBe(1);
        } finally {
          await close();
        }
      });
    }

    it('/res-throws: held while it works, then released: a retry runs it after the first', async () => {
      const { url, close } = await startNest(platform, ResModule, mounted(platform, outer));
      try {
        const before = failing;
        const key = `nest33-${platform}-${outer}-throws-${process.pid}`;
        const open = gate.close();
        expect([408, 503]).toContain((await send(url, '/res-throws', { key, body: {} })).status);
        expect((await send(url, '/res-throws', { key, body: {} })).status).toBe(409);
        open();
        expect(failing - before).toBe(1);
        const last = await afterHeld(() => send(url, '/res-throws', { key, body: {} }));
        // The retry ran it (after the first ended).
        expect(failing - before).toBe(2);
        expect(last).not.toBe(500);
      } finally {
        await close();
      }
    });
  },
);
