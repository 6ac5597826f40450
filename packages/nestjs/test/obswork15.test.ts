import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { json, send } from '@idem/http-conformance';
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
import { defer, from, interval, map, Observable, of, take } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { count, ran, TimeoutInterceptor, TimeoutRetryInterceptor } from './review-kit.js';
import { type Platform, startNest, TenantGuard } from './scenario-app.js';

/**
 * The work of an Observable a handler returns (the nestrev13 finding, fixed): each
 * subscription of it, and the promises made in the handler call's async context (its own
 * code, and what the Observable does when subscribed or torn down), hold the key after an
 * interceptor answered; unsubscription still stops what it stops.
 */
const key = () => `obswork15-${randomUUID()}`;
const until = async (check: () => boolean, ms = 3000) => {
  for (let waited = 0; waited < ms && !check(); waited += 10) await sleep(10);
};

/** Takes the first value of the handler's Observable (unsubscribes it then). */
@Injectable()
class FirstInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(take(1));
  }
}

@Controller('obswork')
@UseGuards(TenantGuard)
class ObsWorkController {
  // Cold: the work starts when Nest subscribes, and goes on after the timeout unsubscribed.
  @Post('cold')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  cold() {
    return defer(async () => {
      ran('cold-start');
      await sleep(400);
      ran('cold-end');
      return { ok: true };
    });
  }

  // Cancellable: its teardown stops the work (as `HttpService` aborts its request).
  @Post('cancellable')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  cancellable() {
    return new Observable<{ ok: boolean }>((subscriber) => {
      ran('cancel-start');
      const timer = setTimeout(() => {
        ran('cancel-done');
        subscriber.next({ ok: true });
        subscriber.complete();
      }, 400);
      return () => {
        ran('cancel-teardown');
        clearTimeout(timer);
      };
    });
  }

  // A teardown that finishes its cleanup asynchronously (a rollback): held until it ended.
  @Post('slow-teardown')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  slowTeardown() {
    return new Observable<{ ok: boolean }>((subscriber) => {
      ran('st-start');
      const timer = setTimeout(() => subscriber.complete(), 5000);
      return () => {
        clearTimeout(timer);
        void (async () => {
          await sleep(400);
          ran('st-rolled-back');
        })();
      };
    });
  }

  // An `async` method that resolves to a cold Observable.
  @Post('async-cold')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  async asyncCold() {
    await sleep(10);
    return defer(async () => {
      ran('async-cold-start');
      await sleep(400);
      ran('async-cold-end');
      return { ok: true };
    });
  }

  @Post('of')
  @Idempotent()
  ofValue() {
    return of({ n: ran('obs-of') });
  }

  @Post('from')
  @Idempotent()
  fromPromise() {
    return from(
      (async () => {
        await sleep(30);
        return { n: ran('obs-from') };
      })(),
    );
  }

  // Never settles: held until maxHoldMs, not for ever.
  @Post('hang')
  @Idempotent({ leaseMs: 400, maxHoldMs: 700 })
  @UseInterceptors(TimeoutInterceptor)
  hang() {
    ran('obs-hang');
    return from(new Promise(() => {}));
  }

  // Called twice by the retry: call 1's work takes 500 ms, call 2's 1500 ms.
  @Post('retry')
  @Idempotent()
  @UseInterceptors(TimeoutRetryInterceptor)
  retried() {
    const n = ran('obs-retry-start');
    return from(
      (async () => {
        await sleep(n % 2 === 1 ? 500 : 1500);
        ran('obs-retry-end');
        return { n };
      })(),
    );
  }

  // An endless stream an interceptor takes the first value of: unsubscribed, not held.
  @Post('first')
  @Idempotent()
  @UseInterceptors(FirstInterceptor)
  first() {
    return interval(20).pipe(map((i) => ({ i, n: ran('obs-tick') })));
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [ObsWorkController],
})
class AppModule {}

describe.each<Platform>(['express', 'fastify'])('@idem/nestjs (obswork15) on %s', (platform) => {
  let url = '';
  let close = async () => {};
  beforeAll(async () => {
    ({ url, close } = await startNest(platform, AppModule));
  });
  afterAll(() => close());

  it('holds the key while a cold Observable work started at subscription runs on after the timeout', async () => {
    const k = key();
    const before = count('cold-start');
    const ended = count('cold-end');
    expect((await send(url, '/obswork/cold', { key: k, body: {} })).status).toBe(408);
    expect((await send(url, '/obswork/cold', { key: k, body: {} })).status).toBe(409);
    expect(count('cold-start')).toBe(before + 1);
    await until(() => count('cold-end') > ended);
    await sleep(50);
    // nesthono32: its work ran to its end after the 408 went out: the answered_outside marker
    // (500 outcome-not-recorded), never a second run (this asserted 408 and a second run before).
    expect((await send(url, '/obswork/cold', { key: k, body: {} })).status).toBe(500);
    expect(count('cold-start')).toBe(before + 1);
  });

  it('holds the key while the Observable an async method resolved to runs on after the timeout', async () => {
    const k = key();
    const before = count('async-cold-start');
    const ended = count('async-cold-end');
    expect((await send(url, '/obswork/async-cold', { key: k, body: {} })).status).toBe(408);
    expect((await send(url, '/obswork/async-cold', { key: k, body: {} })).status).toBe(409);
    expect(count('async-cold-start')).toBe(before + 1);
    await until(() => count('async-cold-end') > ended);
    await sleep(50);
    // nesthono32: its work ran to its end after the 408 went out: the answered_outside marker
    // (500 outcome-not-recorded), never a second run (this asserted 408 and a second run before).
    expect((await send(url, '/obswork/async-cold', { key: k, body: {} })).status).toBe(500);
    expect(count('async-cold-start')).toBe(before + 1);
  });

  it('still unsubscribes a cancellable Observable at the timeout, and then holds nothing', async () => {
    const k = key();
    const before = count('cancel-start');
    const teardowns = count('cancel-teardown');
    const done = count('cancel-done');
    expect((await send(url, '/obswork/cancellable', { key: k, body: {} })).status).toBe(408);
    await until(() => count('cancel-teardown') > teardowns);
    expect(count('cancel-teardown')).toBe(teardowns + 1);
    await sleep(50);
    // Its work was stopped: the retry runs at once (its own 408), not a 409.
    expect((await send(url, '/obswork/cancellable', { key: k, body: {} })).status).toBe(408);
    expect(count('cancel-start')).toBe(before + 2);
    await sleep(400);
    expect(count('cancel-done')).toBe(done);
  });

  it('holds the key while the teardown of an Observable finishes its cleanup', async () => {
    const k = key();
    const before = count('st-start');
    const rolledBack = count('st-rolled-back');
    expect((await send(url, '/obswork/slow-teardown', { key: k, body: {} })).status).toBe(408);
    expect((await send(url, '/obswork/slow-teardown', { key: k, body: {} })).status).toBe(409);
    expect(count('st-start')).toBe(before + 1);
    await until(() => count('st-rolled-back') > rolledBack);
    await sleep(50);
    // rev32d: restored. Its work was stopped at the timeout (the timer cleared) and rolled back,
    // it never ran to its end: the 408 is judged as usual once the rollback ended (released
    // under finalOn2xx), the retry runs (nesthono32 had turned this into the marker, 500).
    expect((await send(url, '/obswork/slow-teardown', { key: k, body: {} })).status).toBe(408);
    expect(count('st-start')).toBe(before + 2);
    await until(() => count('st-rolled-back') > rolledBack + 1);
  });

  it('records an Observable answer before its end reaches the client: the retry replays it', async () => {
    for (const path of ['/obswork/of', '/obswork/from']) {
      const k = key();
      const name = path === '/obswork/of' ? 'obs-of' : 'obs-from';
      const before = count(name);
      const first = await send(url, path, { key: k, body: {} });
      expect(first.status).toBe(201);
      const again = await send(url, path, { key: k, body: {} });
      expect(again.status).toBe(201);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(json(again)).toEqual(json(first));
      expect(count(name)).toBe(before + 1);
    }
  });

  it('bounds the hold of an Observable whose promise never settles by maxHoldMs', async () => {
    const k = key();
    const before = count('obs-hang');
    expect((await send(url, '/obswork/hang', { key: k, body: {} })).status).toBe(408);
    expect((await send(url, '/obswork/hang', { key: k, body: {} })).status).toBe(409);
    let status = 409;
    for (let i = 0; i < 40 && status === 409; i++) {
      await sleep(100);
      status = (await send(url, '/obswork/hang', { key: k, body: {} })).status;
    }
    expect(status).toBe(408);
    expect(count('obs-hang')).toBe(before + 2);
  });

  it('holds the key until the work of every call a resubscribing interceptor made ended', async () => {
    const k = key();
    const started = count('obs-retry-start');
    const ended = count('obs-retry-end');
    expect((await send(url, '/obswork/retry', { key: k, body: {} })).status).toBe(408);
    expect(count('obs-retry-start')).toBe(started + 2);
    await until(() => count('obs-retry-end') > ended);
    await sleep(50);
    // Call 1 ended, call 2 still runs: still held.
    expect(count('obs-retry-end')).toBe(ended + 1);
    expect((await send(url, '/obswork/retry', { key: k, body: {} })).status).toBe(409);
    await until(() => count('obs-retry-end') > ended + 1);
    expect(count('obs-retry-start')).toBe(started + 2);
  });

  it('unsubscribes an endless Observable an interceptor took one value of, and records it', async () => {
    const k = key();
    const first = await send(url, '/obswork/first', { key: k, body: {} });
    expect(first.status).toBe(201);
    const ticks = count('obs-tick');
    await sleep(100);
    // The interval was torn down: no tick since.
    expect(count('obs-tick')).toBe(ticks);
    const again = await send(url, '/obswork/first', { key: k, body: {} });
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(json(again)).toEqual(json(first));
  });
});
