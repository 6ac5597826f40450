import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import * as v8 from 'node:v8';
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
import { defer, Observable } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { count, ran, TimeoutInterceptor } from './review-kit.js';
import { type Platform, startNest, TenantGuard } from './scenario-app.js';

/**
 * rev12d review of the Observable-work commits: the outcome a followed Observable gives
 * (failed or not) and what a teardown that throws leaves held.
 */
const key = () => `rev12d-out-${randomUUID()}`;
const until = async (check: () => boolean, ms = 3000) => {
  for (let waited = 0; waited < ms && !check(); waited += 10) await sleep(10);
};

const promiseHooks = v8.promiseHooks;
const realCreateHook = promiseHooks.createHook;
let live = 0;
promiseHooks.createHook = ((hooks: Parameters<typeof realCreateHook>[0]) => {
  const stop = realCreateHook(hooks);
  if ('before' in hooks || 'after' in hooks) return stop;
  live++;
  let stopped = false;
  return () => {
    if (!stopped) {
      stopped = true;
      live--;
    }
    stop();
  };
}) as typeof realCreateHook;
afterAll(() => {
  promiseHooks.createHook = realCreateHook;
});

/**
 * Answers a fallback at 150 ms without unsubscribing the handler's Observable (a "respond
 * early, let it finish" interceptor): the handler's own outcome comes later.
 */
@Injectable()
class FallbackInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return new Observable((subscriber) => {
      next.handle().subscribe({ error: () => {} });
      const timer = setTimeout(() => {
        subscriber.next({ fallback: true });
        subscriber.complete();
      }, 150);
      return () => clearTimeout(timer);
    });
  }
}

/** An Observable whose work fails 300 ms after its subscription (past the 150 ms answer). */
const failsLater = (name: string) =>
  defer(async () => {
    ran(`${name}-start`);
    await sleep(300);
    ran(`${name}-failed`);
    throw new Error('the work failed');
  });

@Controller('outcome')
@UseGuards(TenantGuard)
class OutcomeController {
  @Post('sync-fails')
  @Idempotent()
  @UseInterceptors(FallbackInterceptor)
  syncFails() {
    return failsLater('sync-fails');
  }

  @Post('async-fails')
  @Idempotent()
  @UseInterceptors(FallbackInterceptor)
  async asyncFails() {
    await sleep(5);
    return failsLater('async-fails');
  }

  // A plain (not `async`) method that returns a promise of an Observable: `.then()` chains,
  // or an `async` method compiled for an older target (TypeScript's __awaiter).
  @Post('then-observable')
  @Idempotent({ leaseMs: 400, maxHoldMs: 3000 })
  @UseInterceptors(TimeoutInterceptor)
  thenObservable() {
    return sleep(10).then(() =>
      defer(async () => {
        ran('then-obs-start');
        await sleep(200);
        ran('then-obs-end');
        return { ok: true };
      }),
    );
  }

  // The same with work that outlives the timeout by longer: held meanwhile (a fresh count
  // for the Observable must not forget what it runs).
  @Post('then-observable-slow')
  @Idempotent({ leaseMs: 400, maxHoldMs: 3000 })
  @UseInterceptors(TimeoutInterceptor)
  thenObservableSlow() {
    void sleep(1000); // made before it returned: not watched (see the README)
    return sleep(10).then(() =>
      defer(async () => {
        ran('then-obs-slow-start');
        await sleep(450);
        ran('then-obs-slow-end');
        return { ok: true };
      }),
    );
  }

  // Its teardown throws (a driver's cancel that throws on a closed handle).
  @Post('teardown-throws')
  @Idempotent({ leaseMs: 400, maxHoldMs: 3000 })
  @UseInterceptors(TimeoutInterceptor)
  teardownThrows() {
    return new Observable<unknown>(() => {
      ran('tt-start');
      return () => {
        ran('tt-teardown');
        throw new Error('cancel failed: handle closed');
      };
    });
  }
}

/** polrev review: outcome policies with a fault, the warnings they report. */
const warnings: string[] = [];
const warn = (message: string) => warnings.push(message);
let throwingCalls = 0;
/** Rejections nobody handled (an async policy's rejection ends a process). */
const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));

@Controller('policy')
@UseGuards(TenantGuard)
class PolicyController {
  @Post('throws-once')
  @Idempotent({
    onWarning: warn,
    isFinal: () => {
      throwingCalls++;
      if (throwingCalls === 1) throw new Error('policy bug');
      return true;
    },
  })
  throwsOnce() {
    ran('polrev-throws');
    return { charged: true };
  }

  @Post('rejects')
  @Idempotent({ onWarning: warn, isFinal: () => Promise.reject(new Error('async')) as never })
  rejects() {
    ran('polrev-rejects');
    return { charged: true };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [OutcomeController, PolicyController],
})
class AppModule {}

describe.each<Platform>(['express', 'fastify'])(
  '@idem/nestjs (rev12d outcome) on %s',
  (platform) => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, AppModule));
    });
    afterAll(() => close());

    /** The fallback 201 went out; the handler failed after it: the key is released, the retry runs again. */
    const releasedAfterFailure = async (path: string, name: string) => {
      const k = key();
      const started = count(`${name}-start`);
      const failed = count(`${name}-failed`);
      expect((await send(url, path, { key: k, body: {} })).status).toBe(201);
      await until(() => count(`${name}-failed`) > failed);
      await sleep(60);
      const again = await send(url, path, { key: k, body: {} });
      expect(again.headers['idempotent-replayed']).toBeUndefined();
      expect(again.status).toBe(201);
      expect(count(`${name}-start`)).toBe(started + 2);
      await until(() => count(`${name}-failed`) > failed + 1);
    };

    it('releases the key when the Observable a method returned failed after another answer went out', async () => {
      await releasedAfterFailure('/outcome/sync-fails', 'sync-fails');
    });

    // Held: the async method's promise is released (fulfilled) before the Observable's hold
    // starts, and a new hold resets the outcome: the Observable's failure decides.
    it('releases the key when the Observable an async method resolved to failed after another answer went out', async () => {
      await releasedAfterFailure('/outcome/async-fails', 'async-fails');
    });

    // FIXED (was FINDING MEDIUM): a plain method's synchronous part is watched (`mayObserve`);
    // the promises it made were counted, then `returned()` closed the call (the hooks went
    // off) before they settled, so their settle was never seen and the stale count was reused
    // when `follow()` reopened the same call for the Observable the promise resolved to: the
    // key was held (409) and the hooks on until maxHoldMs. Now `close()` drops the count with
    // the hold it stood for and starts a new epoch; a settle of an older epoch is ignored.
    it('frees the key once the Observable a plain method returned a promise of ended after the timeout', async () => {
      const k = key();
      const started = count('then-obs-start');
      const ended = count('then-obs-end');
      expect((await send(url, '/outcome/then-observable', { key: k, body: {} })).status).toBe(408);
      await until(() => count('then-obs-end') > ended);
      await sleep(100);
      // nesthono32: its work ran to its end after the 408 went out: the answered_outside marker
      // (500 outcome-not-recorded), never a second run (this asserted 408 and a second run before).
      expect((await send(url, '/outcome/then-observable', { key: k, body: {} })).status).toBe(500);
      expect(count('then-obs-start')).toBe(started + 1);
    });

    it('holds the key while the Observable a plain method returned a promise of still runs, and frees it once it ended', async () => {
      const k = key();
      const started = count('then-obs-slow-start');
      const ended = count('then-obs-slow-end');
      const path = '/outcome/then-observable-slow';
      expect((await send(url, path, { key: k, body: {} })).status).toBe(408);
      expect(count('then-obs-slow-end')).toBe(ended);
      expect((await send(url, path, { key: k, body: {} })).status).toBe(409);
      expect(count('then-obs-slow-start')).toBe(started + 1);
      await until(() => count('then-obs-slow-end') > ended);
      await sleep(60);
      // nesthono32: its work ran to its end after the 408 went out: the answered_outside marker
      // (500 outcome-not-recorded), never a second run (this asserted 408 and a second run before).
      expect((await send(url, path, { key: k, body: {} })).status).toBe(500);
      expect(count('then-obs-slow-start')).toBe(started + 1);
    });

    // FIXED (was FINDING LOW): `follow()`'s teardown called `inner.unsubscribe()` and then
    // `end(true)`; when the source's teardown threw (rxjs rethrows it as an
    // UnsubscriptionError) `end` was never reached: the subscription stayed counted, the key
    // held (409) and the hooks on until maxHoldMs. Now `end(true)` runs in a `finally`.
    it('frees the key once an Observable whose teardown throws was torn down', async () => {
      const k = key();
      const before = count('tt-start');
      const teardowns = count('tt-teardown');
      const first = await send(url, '/outcome/teardown-throws', { key: k, body: {} });
      expect(first.status).toBeGreaterThanOrEqual(400);
      await until(() => count('tt-teardown') > teardowns);
      await sleep(100);
      expect((await send(url, '/outcome/teardown-throws', { key: k, body: {} })).status).not.toBe(
        409,
      );
      expect(count('tt-start')).toBe(before + 2);
    });

    it('bounds the hold of an Observable whose teardown threw by maxHoldMs, and turns the hooks off', async () => {
      const k = key();
      const at = Date.now();
      await send(url, '/outcome/teardown-throws', { key: k, body: {} });
      let status = 409;
      for (let i = 0; i < 50 && status === 409; i++) {
        await sleep(100);
        status = (await send(url, '/outcome/teardown-throws', { key: k, body: {} })).status;
      }
      expect(status).not.toBe(409);
      expect(Date.now() - at).toBeLessThan(4500);
      await until(() => live === 0, 4000);
      expect(live).toBe(0);
    });

    // polrev (held): core now records a success whose policy throws, as @idem/http does.
    it('a policy that throws on a success: the client gets the response, the fault is reported, the retry replays, the handler ran once', async () => {
      throwingCalls = 0;
      warnings.length = 0;
      const k = key();
      const before = count('polrev-throws');
      expect((await send(url, '/policy/throws-once', { key: k, body: {} })).status).toBe(201);
      expect(warnings.some((w) => w.includes('policy bug'))).toBe(true);
      const again = await send(url, '/policy/throws-once', { key: k, body: {} });
      expect([again.status, again.headers['idempotent-replayed']]).toEqual([201, 'true']);
      expect(count('polrev-throws')).toBe(before + 1);
    });

    // polrev FINDING (MEDIUM, fixed in @idem/http): the rejection went unhandled.
    it('a policy answering a rejected Promise: recorded as a throwing policy is, reported, nothing unhandled', async () => {
      warnings.length = 0;
      const k = key();
      const before = count('polrev-rejects');
      expect((await send(url, '/policy/rejects', { key: k, body: {} })).status).toBe(201);
      const again = await send(url, '/policy/rejects', { key: k, body: {} });
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(count('polrev-rejects')).toBe(before + 1);
      expect(warnings.some((w) => w.includes('Promise'))).toBe(true);
      await sleep(20);
      expect(unhandled).toEqual([]);
    });
  },
);
