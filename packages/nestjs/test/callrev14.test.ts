import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  BadRequestException,
  Body,
  type CallHandler,
  Controller,
  type ExecutionContext,
  type INestApplication,
  Injectable,
  type MiddlewareConsumer,
  Module,
  type NestInterceptor,
  type NestMiddleware,
  Post,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import { type Observable, retry } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finalOnceStarted, IdempotencyModule, Idempotent } from '../src/index.js';
import {
  count,
  jobs,
  LazyWorkerPipe,
  ran,
  stopWorker,
  TimeoutInterceptor,
  TimeoutRetryInterceptor,
} from './review-kit.js';
import { type Platform, startNest, TenantGuard } from './scenario-app.js';

const key = () => `callrev14-${randomUUID()}`;
const until = async (check: () => boolean, ms = 3000) => {
  for (let waited = 0; waited < ms && !check(); waited += 10) await sleep(10);
};

/** Retries a failed call once (no timeout of its own). */
@Injectable()
class RetryInterceptor implements NestInterceptor {
  intercept(_context: ExecutionContext, next: CallHandler): Observable<unknown> {
    return next.handle().pipe(retry(1));
  }
}

/** A lazy query builder (Knex `QueryBuilder`, a Mongoose `Query`): runs its query on every `then()`. */
function lazyQuery(name: string, ms = 20): PromiseLike<{ n: number }> {
  return {
    // biome-ignore lint/suspicious/noThenProperty: a thenable on purpose
    then(onFulfilled, onRejected) {
      const n = ran(name); // the INSERT
      return new Promise<{ n: number }>((resolve) => setTimeout(() => resolve({ n }), ms)).then(
        onFulfilled,
        onRejected,
      );
    },
  };
}

/** Mongoose's Query: a second `then()` throws "Query was already executed". */
function onceQuery(name: string): PromiseLike<{ n: number }> {
  let executed = false;
  return {
    // biome-ignore lint/suspicious/noThenProperty: a thenable on purpose
    then(onFulfilled, onRejected) {
      if (executed) {
        return Promise.reject(new Error('Query was already executed')).then(
          onFulfilled,
          onRejected,
        );
      }
      executed = true;
      const n = ran(name);
      return Promise.resolve({ n }).then(onFulfilled, onRejected);
    },
  };
}

// A gate a middleware waits on with a callback: the request behind it runs on in the async
// context of whoever opens the gate (a concurrency limiter, a queue).
const gate = new EventEmitter();
@Injectable()
class GateMiddleware implements NestMiddleware {
  use(_req: unknown, _res: unknown, next: () => void) {
    gate.once('open', () => next());
  }
}

@Controller('callrev')
@UseGuards(TenantGuard)
class CallrevController {
  @Post('lazy')
  @Idempotent()
  lazy() {
    return lazyQuery('lazy');
  }

  @Post('lazy-once')
  @Idempotent()
  lazyOnce() {
    return onceQuery('lazy-once');
  }

  // Call 1 fails fast (20 ms); the retry's call 2 works 700 ms; the outer timeout answers 408.
  @Post('fast-fail-retry')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor, RetryInterceptor)
  async fastFailRetry() {
    const n = ran('ffr-start');
    if (n % 2 === 1) {
      await sleep(20);
      throw new Error('transient');
    }
    await sleep(700);
    ran('ffr-end');
    return { n };
  }

  // As above, call 1 throws synchronously.
  @Post('sync-fail-retry')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor, RetryInterceptor)
  syncFailRetry() {
    const n = ran('sfr-start');
    if (n % 2 === 1) throw new Error('transient');
    return sleep(700).then(() => {
      ran('sfr-end');
      return { n };
    });
  }

  // Both calls reject after the 408 (300 ms): the key must be released (the handler failed).
  @Post('both-reject')
  @Idempotent({ isFinal: finalOnceStarted })
  @UseInterceptors(TimeoutRetryInterceptor)
  async bothReject() {
    ran('br-start');
    await sleep(400);
    ran('br-end');
    throw new BadRequestException('failed');
  }

  // Calls itself through setTimeout, setImmediate, queueMicrotask and an emitter.
  @Post('recursive')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  async recursive(@Body() body?: { depth?: number }) {
    const depth = body?.depth ?? 0;
    ran('rec');
    if (depth >= 3) {
      await sleep(300);
      ran('rec-end');
      return { depth };
    }
    const next = { depth: depth + 1 };
    const via = [
      (f: () => void) => setTimeout(f, 5),
      (f: () => void) => setImmediate(f),
      (f: () => void) => queueMicrotask(f),
    ][depth % 3] as (f: () => void) => void;
    return new Promise((resolve, reject) =>
      via(() => {
        this.recursive(next).then(resolve, reject);
      }),
    );
  }

  // Never settles: held until maxHoldMs.
  @Post('hang')
  @Idempotent({ leaseMs: 400, maxHoldMs: 700 })
  @UseInterceptors(TimeoutRetryInterceptor)
  hang() {
    ran('hang');
    return new Promise(() => {});
  }

  // Request A: its pipe starts the worker; its own work takes 300 ms (408 at 150).
  @Post('pipe-a')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  async pipeA(@Body(LazyWorkerPipe) _body: unknown) {
    ran('pipe-a');
    await sleep(300);
    ran('pipe-a-end');
    return { ok: true };
  }

  // As pipe-a, for as long as the body says (300 ms by default).
  @Post('pipe-b')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  async pipeB(@Body(LazyWorkerPipe) body?: { ms?: number }) {
    ran('pipe-b');
    await sleep(body?.ms ?? 300);
    ran('pipe-b-end');
    return { ok: true };
  }

  // A tracked route method that a background job also calls (as a service method).
  @Post('job')
  @Idempotent()
  async job() {
    await sleep(1500);
    ran('job-end');
    return { ok: true };
  }

  // Opens the gate from inside its handler (request B behind it runs in this context).
  @Post('opener')
  @Idempotent()
  async opener() {
    gate.emit('open');
    await sleep(50);
    return { opened: true };
  }

  // Behind the gate: slow, with a timeout.
  @Post('gated')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  async gated() {
    ran('gated');
    await sleep(500);
    ran('gated-end');
    return { ok: true };
  }

  @Post('plain')
  @Idempotent()
  async plain() {
    return { n: ran('plain') };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [CallrevController],
})
class AppModule {
  configure(consumer: MiddlewareConsumer) {
    consumer.apply(GateMiddleware).forRoutes('callrev/gated');
  }
}

describe.each<Platform>(['express', 'fastify'])('@idem/nestjs (callrev14) on %s', (platform) => {
  let url = '';
  let close = async () => {};
  let app: INestApplication | undefined;
  beforeAll(async () => {
    ({ url, close, app } = await startNest(platform, AppModule));
  });
  afterAll(async () => {
    stopWorker();
    jobs.length = 0;
    await close();
  });

  /**
   * Request A (`pipe-b`) starts the worker in its pipe; while A runs, a job of the worker (in
   * A's context) calls the route's own method on `instance` for 1.5 s. A's own work ends
   * first: its 408 is released under finalOn2xx, and its retry must run (not get 409 for as
   * long as the job runs).
   */
  const jobCallsOwnRoute = async (instance: CallrevController) => {
    stopWorker();
    const k = key();
    const before = count('pipe-b');
    const ended = count('pipe-b-end');
    const first = send(url, '/callrev/pipe-b', { key: k, body: {} });
    await sleep(60);
    let jobDone = false;
    jobs.push(() => instance.pipeB({ ms: 1500 }).finally(() => (jobDone = true)));
    try {
      expect((await first).status).toBe(408);
      await until(() => count('pipe-b-end') > ended);
      await sleep(100);
      // nesthono32: its work ran to its end after the 408 went out: the answered_outside marker
      // (500 outcome-not-recorded), never a second run (this asserted 408 and a second run before).
      const retried = await send(url, '/callrev/pipe-b', { key: k, body: {} });
      expect(jobDone).toBe(false);
      expect(retried.status).toBe(500);
      expect(count('pipe-b')).toBe(before + 2);
    } finally {
      // Nothing of this test runs on into the next one.
      await until(() => jobDone && count('pipe-b-end') >= count('pipe-b') - before + ended);
    }
  };

  // FINDING (HIGH, fixed: a thenable that is not a promise is turned into one promise, once, and Nest gets that promise; pre-existing, not introduced by 98e4a4d): HandlerRun.returned() follows a non-promise thenable with
  // `Promise.resolve(result).then(...)`, which calls its `then()`; Nest calls it again to get
  // the value (Nest 12.5 even promises to call a lazy query builder's then() once). A Knex
  // QueryBuilder or a Mongoose Query returned from an @Idempotent() route runs its query twice
  // (exactly-once broken), and a Mongoose Query throws "Query was already executed" on the
  // second then(): the route answers 500. Fix: in trackedHandler, for a thenable that is not a
  // native Promise, adopt it once (`const p = Promise.resolve(result)`), follow `p` and return
  // `p` to Nest in its place.
  it('runs the query of a lazy thenable a handler returns once', async () => {
    const before = count('lazy');
    const first = await send(url, '/callrev/lazy', { key: key(), body: {} });
    expect(first.status).toBe(201);
    await sleep(100);
    expect(count('lazy')).toBe(before + 1);
  });

  it('answers a Mongoose-like query (second then() throws) with its value', async () => {
    const first = await send(url, '/callrev/lazy-once', { key: key(), body: {} });
    expect(first.status).toBe(201);
  });

  it('still runs an ordinary route once and replays it', async () => {
    const k = key();
    const before = count('plain');
    const first = await send(url, '/callrev/plain', { key: k, body: {} });
    expect(first.status).toBe(201);
    const again = await send(url, '/callrev/plain', { key: k, body: {} });
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(count('plain')).toBe(before + 1);
    expect(json(again)).toEqual(json(first));
  });

  it('follows the retry call after a first call that rejected (async)', async () => {
    const k = key();
    const started = count('ffr-start');
    const ended = count('ffr-end');
    expect((await send(url, '/callrev/fast-fail-retry', { key: k, body: {} })).status).toBe(408);
    expect(count('ffr-start')).toBe(started + 2);
    const retried = await send(url, '/callrev/fast-fail-retry', { key: k, body: {} });
    expect(retried.status).toBe(409);
    expect(count('ffr-start')).toBe(started + 2);
    await until(() => count('ffr-end') > ended);
  });

  it('follows the retry call after a first call that threw synchronously', async () => {
    const k = key();
    const started = count('sfr-start');
    const ended = count('sfr-end');
    expect((await send(url, '/callrev/sync-fail-retry', { key: k, body: {} })).status).toBe(408);
    expect(count('sfr-start')).toBe(started + 2);
    const retried = await send(url, '/callrev/sync-fail-retry', { key: k, body: {} });
    expect(retried.status).toBe(409);
    await until(() => count('sfr-end') > ended);
  });

  it('releases the key when every call rejected, once all settled', async () => {
    const k = key();
    const started = count('br-start');
    const ended = count('br-end');
    expect((await send(url, '/callrev/both-reject', { key: k, body: {} })).status).toBe(408);
    expect(count('br-start')).toBe(started + 2);
    expect((await send(url, '/callrev/both-reject', { key: k, body: {} })).status).toBe(409);
    await until(() => count('br-end') === ended + 2);
    await sleep(50);
    // Released: the retry runs (its own 408), not a replay of the 408.
    const again = await send(url, '/callrev/both-reject', { key: k, body: {} });
    expect(again.headers['idempotent-replayed']).toBeUndefined();
    expect(count('br-start')).toBe(started + 4);
    await until(() => count('br-end') === ended + 4);
  });

  it('keeps self-calls via setTimeout, setImmediate and queueMicrotask part of the one call', async () => {
    const k = key();
    const before = count('rec');
    const ended = count('rec-end');
    expect((await send(url, '/callrev/recursive', { key: k, body: { depth: 0 } })).status).toBe(
      408,
    );
    expect((await send(url, '/callrev/recursive', { key: k, body: { depth: 0 } })).status).toBe(
      409,
    );
    await until(() => count('rec-end') > ended);
    expect(count('rec')).toBe(before + 4);
    await sleep(50);
    // nesthono32: its work ran to its end after the 408 went out: the answered_outside marker
    // (500 outcome-not-recorded), never a second run (this asserted 408 and a second run before).
    const again = await send(url, '/callrev/recursive', { key: k, body: { depth: 0 } });
    expect(again.status).toBe(500);
    expect(count('rec')).toBe(before + 4);
  });

  it('bounds the hold of never-settling calls by maxHoldMs', async () => {
    const k = key();
    const before = count('hang');
    expect((await send(url, '/callrev/hang', { key: k, body: {} })).status).toBe(408);
    expect(count('hang')).toBe(before + 2);
    expect((await send(url, '/callrev/hang', { key: k, body: {} })).status).toBe(409);
    let status = 409;
    for (let i = 0; i < 40 && status === 409; i++) {
      await sleep(100);
      status = (await send(url, '/callrev/hang', { key: k, body: {} })).status;
    }
    expect(status).toBe(408);
    expect(count('hang')).toBe(before + 4);
  });

  it('does not join a request run in another request handler context to that one', async () => {
    const k = key();
    const before = count('gated');
    const ended = count('gated-end');
    const gated = send(url, '/callrev/gated', { key: k, body: {} });
    await sleep(100);
    // Opens the gate from inside its handler: the gated request's pipeline runs in its context.
    expect((await send(url, '/callrev/opener', { key: key(), body: {} })).status).toBe(201);
    expect((await gated).status).toBe(408);
    expect(count('gated')).toBe(before + 1);
    // Held for its own handler, which still runs.
    const again = send(url, '/callrev/gated', { key: k, body: {} });
    await sleep(50);
    gate.emit('open');
    expect((await again).status).toBe(409);
    await until(() => count('gated-end') > ended);
    expect(count('gated')).toBe(before + 1);
  });

  // Control for the finding below: without the job, A's retry runs once A's own work ended.
  it('releases request A once its own work ended (no job)', async () => {
    const k = key();
    const before = count('pipe-a');
    const ended = count('pipe-a-end');
    expect((await send(url, '/callrev/pipe-a', { key: k, body: {} })).status).toBe(408);
    await until(() => count('pipe-a-end') > ended);
    await sleep(100);
    // nesthono32: its work ran to its end after the 408 went out: the answered_outside marker
    // (500 outcome-not-recorded), never a second run (this asserted 408 and a second run before).
    expect((await send(url, '/callrev/pipe-a', { key: k, body: {} })).status).toBe(500);
    expect(count('pipe-a')).toBe(before + 1);
  });

  // FIXED (was FINDING LOW, introduced by 98e4a4d: a call of a tracked route method counted
  // as a call of request A whenever it ran in A's async context outside A's handler; here a
  // worker started lazily by A's pipe keeps A's context for good, and a job it runs later,
  // while A still runs, calls a tracked method as a service: it joined A's run and held A's
  // key for as long as the job ran). Closing the run once the interceptor's subscription ended
  // (done before) does not cover a job that runs while A's handler does: only calls of the
  // function Nest calls for the route (context.getHandler()), or of the same method on the
  // same instance when a decorator above @Idempotent() wraps it, join the run now.
  it('does not hold request A for work a worker its pipe started runs later', async () => {
    // The worker is started by A (the first request through the pipe since this reset).
    stopWorker();
    const k = key();
    const before = count('pipe-a');
    const ended = count('pipe-a-end');
    const jobsEnded = count('job-end');
    const first = send(url, '/callrev/pipe-a', { key: k, body: {} });
    await sleep(60);
    // Unrelated work the worker runs (in A's context): a tracked method called as a service.
    jobs.push(() => CallrevController.prototype.job.call(undefined));
    expect((await first).status).toBe(408);
    await until(() => count('pipe-a-end') > ended);
    await sleep(100);
    // nesthono32: its work ran to its end after the 408 went out: the answered_outside marker
    // (500 outcome-not-recorded), never a second run (this asserted 408 and a second run before).
    const retried = await send(url, '/callrev/pipe-a', { key: k, body: {} });
    expect(retried.status).toBe(500);
    expect(count('pipe-a')).toBe(before + 1);
    await until(() => count('job-end') > jobsEnded);
    await sleep(400);
  });

  // FIXED (was FINDING LOW, left open before): the narrower case of the one above: work the
  // request's pipe started that calls the route's OWN method on a controller instance while
  // the request runs (a job replaying the route) joined the request's run (Nest calls that
  // same function, in the very context the pipe's worker kept), and A's key stayed held until
  // the job ended. Nest calls a route of a controller of the default (singleton) scope on the
  // instance it made (one per module declaring the controller): a call on any other object
  // (here an instance the job made) is not Nest's, and no longer joins the run. The call on
  // Nest's own instance stays a gap: see the next test.
  it('does not hold request A for its own route method a worker its pipe started calls on another instance', async () => {
    await jobCallsOwnRoute(Object.create(CallrevController.prototype) as CallrevController);
  });

  // FINDING (LOW, left): as above, but the job calls the route's method on the controller
  // instance Nest itself calls it on (a job that holds the singleton controller, got with
  // `app.get()` or injected). Nest's call and this one are the same function on the same
  // object, in the same async context (the job's worker was started by A's pipe, so it kept
  // A's context): the interceptor, which sees neither Nest's call site nor the job's, cannot
  // tell them apart. A's key stays held until the job ended (bounded by maxHoldMs; never
  // freed early, so exactly-once holds). Fix: would need Nest to mark its own call of the
  // handler. What the app can do: start such workers outside the request's context (in
  // onModuleInit, or through an `AsyncLocalStorage.snapshot()` taken at startup), and have
  // jobs call a service rather than a controller's route method.
  it.fails("does not hold request A for its own route method a worker its pipe started calls on Nest's instance", async () => {
    await jobCallsOwnRoute(app?.get(CallrevController) as CallrevController);
  });
});
