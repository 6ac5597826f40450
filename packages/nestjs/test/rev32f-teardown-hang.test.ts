import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, Post, UseGuards, UseInterceptors } from '@nestjs/common';
import { Observable } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { count, ran, TimeoutInterceptor } from './review-kit.js';
import { type Platform, startNest, TenantGuard } from './scenario-app.js';

// rev32f probe of rev32d's fix 4: an Observable torn down while nothing of its work ran, whose
// teardown starts a cleanup that never settles, holds its key until maxHoldMs, not for ever.

@Controller('rev32f')
@UseGuards(TenantGuard)
class HangController {
  @Post('teardown-hang')
  @Idempotent({ leaseMs: 400, maxHoldMs: 700 })
  @UseInterceptors(TimeoutInterceptor)
  teardownHang() {
    return new Observable<{ ok: boolean }>((subscriber) => {
      ran('rev32f-th-start');
      const timer = setTimeout(() => subscriber.complete(), 5000);
      return () => {
        clearTimeout(timer);
        void new Promise(() => {});
      };
    });
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [HangController],
})
class HangModule {}

describe.each<Platform>(['express', 'fastify'])('rev32f nestjs on %s', (platform) => {
  it('bounds the hold of a teardown whose cleanup never settles by maxHoldMs', async () => {
    const { url, close } = await startNest(platform, HangModule);
    try {
      const k = `rev32f-th-${randomUUID()}`;
      const before = count('rev32f-th-start');
      expect((await send(url, '/rev32f/teardown-hang', { key: k, body: {} })).status).toBe(408);
      expect((await send(url, '/rev32f/teardown-hang', { key: k, body: {} })).status).toBe(409);
      let status = 409;
      for (let i = 0; i < 40 && status === 409; i++) {
        await sleep(100);
        status = (await send(url, '/rev32f/teardown-hang', { key: k, body: {} })).status;
      }
      expect(status).toBe(408);
      expect(count('rev32f-th-start')).toBe(before + 2);
    } finally {
      await close();
    }
  });
});
