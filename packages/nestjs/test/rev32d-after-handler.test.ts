import 'reflect-metadata';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  type CallHandler,
  Controller,
  type ExecutionContext,
  Injectable,
  Module,
  type NestInterceptor,
  Post,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { NestFastifyApplication } from '@nestjs/platform-fastify';
import { mergeMap, type Observable } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { outerTimeout, type Platform, startNest, TenantGuard } from './scenario-app.js';

// rev32d FINDING (HIGH, a second run; nesthono32 left it): a timeout mounted before Nest's router
// (Express middleware, a Fastify onRequest hook) that answers after the handler ran to its end but
// while its answer was still on its way through an interceptor between idem's and the handler
// (an audit, a transform that awaits): the handler's work was no longer pending, so the 503 was
// judged as usual and released at once: every retry ran the handler again (3 runs for one key
// here). Now that answer, ended outside the request's Nest pipeline before the interceptor passed
// anything on, after the handler's work ran to its end, leaves the answered_outside marker.

let runs = 0;

/** An interceptor between idem's and the handler that works on after the handler returned. */
@Injectable()
class AuditAfter implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(
      mergeMap(async (value) => {
        await sleep(300);
        return value;
      }),
    );
  }
}

@Controller()
@UseGuards(TenantGuard)
class ChargeController {
  @Post('charge')
  @Idempotent()
  @UseInterceptors(AuditAfter)
  async charge() {
    runs += 1;
    return { charged: runs };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [ChargeController],
})
class ChargeModule {}

describe.each<Platform>(['express', 'fastify'])('rev32d nestjs on %s', (platform) => {
  it('an outside timeout after the handler ran, before its answer came through: never a second run', async () => {
    const { url, close } = await startNest(platform, ChargeModule, (app) =>
      outerTimeout(platform)(app as NestExpressApplication & NestFastifyApplication),
    );
    try {
      const before = runs;
      const key = `rev32d-after-${platform}-${process.pid}`;
      expect((await send(url, '/charge', { key, body: {} })).status).toBe(503);
      // At once (the interceptor still works) and after it ended: the marker, no second run.
      for (const wait of [0, 400]) {
        await sleep(wait);
        const retry = await send(url, '/charge', { key, body: {} });
        expect(retry.status).toBe(500);
        expect(JSON.parse(retry.body.toString()).type).toMatch(/outcome-not-recorded$/);
      }
      expect(runs - before).toBe(1);
    } finally {
      await close();
    }
  });
});
