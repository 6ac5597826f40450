import 'reflect-metadata';
import {
  describeOuterTimeout,
  type OuterTimeoutProbe,
  outerTimeoutProbe,
  PROBLEM,
  send,
} from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  Controller,
  Module,
  Post,
  Res,
  ServiceUnavailableException,
  UseGuards,
} from '@nestjs/common';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { defer, from } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { TimeoutInterceptor } from './review-kit.js';
import { outerTimeout, type Platform, startNest, TenantGuard } from './scenario-app.js';

// nesthono32 FINDING (MEDIUM-HIGH, exactly-once; fixed): a timeout mounted OUTSIDE Nest's
// interceptor (Express middleware, a Fastify onRequest hook) that answers 503 while the
// controller runs: the recorder saw a response that is not final end while nothing had told the
// interceptor of it, and the key was released at once: a retry sent after the 503 ran the handler
// a second time, beside the first. And for a timeout the interceptor does see (an interceptor
// outside it, timeout31): the key was held until the handler's work ended, then released under
// finalOn2xx, so a later retry ran it a second time (after it). Now the key stays held (409)
// until the handler's work ended; then a handler that ran to its end (or an Observable torn down:
// its work may have happened) leaves the `answered_outside` marker (500 outcome-not-recorded to
// retries), and one that threw is released (a retry runs it).

const LEASE = 300;
let probe: OuterTimeoutProbe = outerTimeoutProbe(LEASE);
let gate: Promise<void> = Promise.resolve();
let gated = 0;
let resOwn = 0;

@Controller()
@UseGuards(TenantGuard)
class ChargesController {
  @Post('charges')
  @Idempotent()
  async charge() {
    return { run: await probe.work() };
  }

  @Post('fails')
  @Idempotent()
  async fails() {
    return { run: await probe.workOrThrow() };
  }

  @Post('own')
  @Idempotent()
  own() {
    throw new ServiceUnavailableException();
  }

  @Post('gated')
  @Idempotent()
  async gatedRoute() {
    gated += 1;
    await gate;
    return { gated };
  }

  @Post('res-own')
  @Idempotent()
  async resOwn(@Res() res: { status(code: number): { send(body: string): unknown } }) {
    resOwn += 1;
    // Its own 503, written in its own async context, then more work of its own.
    res.status(503).send('busy');
    await new Promise((resolve) => setTimeout(resolve, 400));
  }

  @Post('observed')
  @Idempotent()
  observed() {
    return defer(() => from(probe.work().then((run) => ({ run }))));
  }
}

@Module({
  imports: [
    IdempotencyModule.forRoot({ store: createMemoryStore(), leaseMs: LEASE, onWarning: () => {} }),
  ],
  controllers: [ChargesController],
})
class ChargesModule {}

for (const platform of ['express', 'fastify'] as const) {
  describeOuterTimeout(
    `nesthono32 nestjs on ${platform}: a timeout outside Nest answers 503 while the controller runs`,
    LEASE,
    async (next) => {
      probe = next;
      const { url, close } = await startNest(platform, ChargesModule, (app) =>
        outerTimeout(platform)(app as NestExpressApplication & NestFastifyApplication),
      );
      return { url, close };
    },
    { timeoutStatus: 503, replay: false },
  );
}

describe.each<Platform>(['express', 'fastify'])(
  'nesthono32 nestjs on %s: the handler torn down by a timeout interceptor outside this one',
  (platform) => {
    it('an Observable torn down by the timeout while its work runs: held, then the marker (its work may have happened)', async () => {
      probe = outerTimeoutProbe(LEASE);
      const { url, close } = await startNest(platform, ChargesModule, (app) =>
        app.useGlobalInterceptors(new TimeoutInterceptor()),
      );
      try {
        await probe.check(url, '/observed', 408, false);
      } finally {
        await close();
      }
    });

    it("a @Res() handler's own 503, its work going on, is still released at once (not taken for an outside answer)", async () => {
      const { url, close } = await startNest(platform, ChargesModule, (app) =>
        outerTimeout(platform)(app as NestExpressApplication & NestFastifyApplication),
      );
      try {
        const before = resOwn;
        const key = `nesthono32-res-own-${platform}-${process.pid}`;
        for (let i = 0; i < 2; i += 1) {
          const answer = await send(url, '/res-own', { key, body: {} });
          expect(answer.status).toBe(503);
        }
        expect(resOwn - before).toBe(2);
      } finally {
        await close();
      }
    });

    it('concurrent retries during the hold all get 409; then the marker; one run', async () => {
      let letGo!: () => void;
      gate = new Promise<void>((resolve) => {
        letGo = resolve;
      });
      gated = 0;
      const { url, close } = await startNest(platform, ChargesModule, (app) =>
        app.useGlobalInterceptors(new TimeoutInterceptor()),
      );
      try {
        const key = `nesthono32-burst-${platform}-${process.pid}`;
        const post = () => send(url, '/gated', { key, body: { a: 1 } });
        expect((await post()).status).toBe(408);
        const burst = await Promise.all(Array.from({ length: 8 }, post));
        expect(burst.map((answer) => answer.status)).toEqual(burst.map(() => 409));
        letGo();
        let last = await post();
        for (let i = 0; i < 100 && last.status === 409; i += 1) {
          await new Promise((resolve) => setTimeout(resolve, 20));
          last = await post();
        }
        expect([last.status, JSON.parse(last.body.toString()).type]).toEqual([
          500,
          PROBLEM.outcomeNotRecorded,
        ]);
        expect(gated).toBe(1);
      } finally {
        await close();
      }
    });
  },
);
