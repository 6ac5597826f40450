import 'reflect-metadata';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  type CallHandler,
  Controller,
  Injectable,
  Module,
  type NestInterceptor,
  Post,
  ServiceUnavailableException,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import { mergeMap, type Observable } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { type Platform, startNest, TenantGuard } from './scenario-app.js';

// rev32f probe of rev32d's fix 2: an interceptor between idem's and the handler that answers a
// non-final 503 itself after the handler ran to its end (it throws after awaiting) is the
// request's own answer, passed on through idem's interceptor: released, never marked.

let runs = 0;

@Injectable()
class Unavailable implements NestInterceptor {
  intercept(_context: unknown, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(
      mergeMap(async () => {
        await sleep(30);
        throw new ServiceUnavailableException('try again');
      }),
    );
  }
}

@Controller()
@UseGuards(TenantGuard)
class InnerController {
  @Post('inner-503')
  @Idempotent()
  @UseInterceptors(Unavailable)
  async work() {
    runs += 1;
    await sleep(10);
    return { ok: true };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [InnerController],
})
class InnerModule {}

describe.each<Platform>(['express', 'fastify'])('rev32f nestjs on %s', (platform) => {
  it("an inner interceptor's own 503 after the handler ended is released", async () => {
    const { url, close } = await startNest(platform, InnerModule);
    try {
      const before = runs;
      const key = `rev32f-inner-${platform}-${process.pid}`;
      for (let i = 0; i < 2; i += 1)
        expect((await send(url, '/inner-503', { key, body: {} })).status).toBe(503);
      expect(runs - before).toBe(2);
    } finally {
      await close();
    }
  });
});
