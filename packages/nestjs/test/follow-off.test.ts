import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import * as v8 from 'node:v8';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Controller, Module, Post, UseGuards, UseInterceptors } from '@nestjs/common';
import { defer } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { count, ran, TimeoutInterceptor } from './review-kit.js';
import { type Platform, startNest, TenantGuard } from './scenario-app.js';

/**
 * `followObservables: false` (the rev12d review's process-wide hook cost): the module never
 * enables V8's promise hooks; an Observable's work is not followed, a returned promise still is.
 */
const promiseHooks = v8.promiseHooks;
const realCreateHook = promiseHooks.createHook;
let created = 0;
promiseHooks.createHook = ((hooks: Parameters<typeof realCreateHook>[0]) => {
  // Node 20's AsyncLocalStorage enables its own (before/after) hooks through this function.
  if (!('before' in hooks || 'after' in hooks)) created++;
  return realCreateHook(hooks);
}) as typeof realCreateHook;
afterAll(() => {
  promiseHooks.createHook = realCreateHook;
});

const key = () => `follow-off-${randomUUID()}`;
const until = async (check: () => boolean, ms = 3000) => {
  for (let waited = 0; waited < ms && !check(); waited += 10) await sleep(10);
};

@Controller('off')
@UseGuards(TenantGuard)
class OffController {
  @Post('observable')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  observable() {
    return defer(async () => {
      ran('off-obs-start');
      await sleep(300);
      ran('off-obs-end');
      return { ok: true };
    });
  }

  @Post('promise')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  async promise() {
    ran('off-promise-start');
    await sleep(300);
    ran('off-promise-end');
    return { ok: true };
  }
}

@Module({
  imports: [
    IdempotencyModule.forRoot({
      store: createMemoryStore(),
      onWarning: () => {},
      followObservables: false,
    }),
  ],
  controllers: [OffController],
})
class AppModule {}

describe.each<Platform>(['express', 'fastify'])(
  '@idem/nestjs followObservables: false on %s',
  (platform) => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, AppModule));
    });
    afterAll(() => close());

    it('enables no promise hook and releases the key of a timed-out Observable at its answer', async () => {
      const before = created;
      const k = key();
      const started = count('off-obs-start');
      const ended = count('off-obs-end');
      expect((await send(url, '/off/observable', { key: k, body: {} })).status).toBe(408);
      // Not followed (as the option says): the retry runs the handler again beside the first.
      expect((await send(url, '/off/observable', { key: k, body: {} })).status).toBe(408);
      expect(count('off-obs-start')).toBe(started + 2);
      await until(() => count('off-obs-end') >= ended + 2);
      expect(created).toBe(before);
    });

    it('still holds the key while a returned promise runs on after the timeout', async () => {
      const k = key();
      const started = count('off-promise-start');
      const ended = count('off-promise-end');
      expect((await send(url, '/off/promise', { key: k, body: {} })).status).toBe(408);
      expect((await send(url, '/off/promise', { key: k, body: {} })).status).toBe(409);
      expect(count('off-promise-start')).toBe(started + 1);
      await until(() => count('off-promise-end') > ended);
      await sleep(60);
      // nesthono32: its work ran to its end after the 408 went out: the answered_outside marker
      // (500 outcome-not-recorded), never a second run (this asserted 408 and a second run before).
      expect((await send(url, '/off/promise', { key: k, body: {} })).status).toBe(500);
      expect(count('off-promise-start')).toBe(started + 1);
    });
  },
);
