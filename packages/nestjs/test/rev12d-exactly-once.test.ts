import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import * as v8 from 'node:v8';
import { Worker } from 'node:worker_threads';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  type CallHandler,
  Controller,
  type ExecutionContext,
  Injectable,
  Module,
  type NestInterceptor,
  Param,
  Post,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import {
  defer,
  firstValueFrom,
  from,
  interval,
  map,
  NEVER,
  Observable,
  Subject,
  shareReplay,
  switchMap,
  take,
} from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { count, ran, TimeoutInterceptor } from './review-kit.js';
import { type Platform, startNest, TenantGuard } from './scenario-app.js';

/**
 * rev12d review of the Observable-work commits: a retry while the first request's work still
 * runs, for the shapes that work takes (a fetch, a switchMap chain, work scheduled with
 * setImmediate / nextTick / queueMicrotask, a shared Observable, a callback timer, a worker
 * thread), and the bound on an Observable nobody ends.
 */
const key = () => `rev12d-once-${randomUUID()}`;
const until = async (check: () => boolean, ms = 3000) => {
  for (let waited = 0; waited < ms && !check(); waited += 10) await sleep(10);
};

// Live hooks the package enabled (see rev12d-isolation.test.ts).
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

/** The downstream service: answers after 400 ms (`/slow`) or 50 ms (`/fast`). */
let upstream = '';
const upstreamServer: Server = createServer((req, res) => {
  const slow = req.url?.startsWith('/slow');
  ran(slow ? 'up-slow-recv' : 'up-fast-recv');
  setTimeout(
    () => {
      ran(slow ? 'up-slow-done' : 'up-fast-done');
      res.end('{"ok":true}');
    },
    slow ? 400 : 50,
  );
});

/** A worker thread that answers each job 400 ms later. */
const worker = new Worker(
  `const { parentPort } = require('node:worker_threads');
   parentPort.on('message', (id) => setTimeout(() => parentPort.postMessage(id), 400));`,
  { eval: true },
);
worker.unref();
worker.on('message', () => ran('worker-end'));

/** A hot source (a ready/refresh signal) ticking every 100 ms from a timer outside any request. */
const ticks = new Subject<number>();
let tick = 0;
const ticker = setInterval(() => ticks.next(tick++), 100);
ticker.unref();

/** Answers a fallback at 150 ms but keeps the handler's subscription open (never unsubscribes it). */
@Injectable()
class LeakyFallbackInterceptor implements NestInterceptor {
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

const async400 = async (name: string) => {
  ran(`${name}-start`);
  await sleep(400);
  ran(`${name}-end`);
};

@Controller('once')
@UseGuards(TenantGuard)
class OnceController {
  private shared: Observable<unknown> | undefined;
  private token: Observable<string> | undefined;
  private awaitedToken: Observable<string> | undefined;

  @Post('fetch')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  fetchIt() {
    return from(fetch(`${upstream}/slow`).then((r) => r.json()));
  }

  // HttpService-like: the request is aborted at teardown (what `HttpService` does).
  @Post('abortable')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  abortable() {
    return new Observable<unknown>((subscriber) => {
      const controller = new AbortController();
      fetch(`${upstream}/slow`, { method: 'POST', signal: controller.signal })
        .then((r) => r.json())
        .then(
          (value) => {
            subscriber.next(value);
            subscriber.complete();
          },
          (error: unknown) => subscriber.error(error),
        );
      return () => controller.abort();
    });
  }

  // HttpService-like chain: a fast call, then a slow one started in switchMap.
  @Post('chain')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  chain() {
    return defer(() => fetch(`${upstream}/fast`)).pipe(
      switchMap((r) => from(r.text())),
      switchMap(() => from(fetch(`${upstream}/slow`).then((r) => r.json()))),
    );
  }

  // Work scheduled from the subscription with a callback scheduler, running past the timeout.
  @Post('sched/:kind')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  scheduled(@Param('kind') kind: string) {
    return new Observable<unknown>((subscriber) => {
      const work = () =>
        void async400(`sched-${kind}`).then(() => {
          subscriber.next({ ok: true });
          subscriber.complete();
        });
      if (kind === 'immediate') setImmediate(work);
      else if (kind === 'tick') process.nextTick(work);
      else if (kind === 'micro') queueMicrotask(work);
      else setTimeout(work, 20);
    });
  }

  // One Observable shared across requests (a cached computation): started by the first.
  @Post('shared')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  sharedWork() {
    this.shared ??= defer(() => from(async400('shared'))).pipe(shareReplay(1));
    return this.shared.pipe(map(() => ({ ok: true })));
  }

  // A config/token Observable cached for all requests (shareReplay), fetched once (100 ms),
  // then each request's own work (400 ms, not cancellable) started in switchMap.
  @Post('after-shared/:name')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  afterShared(@Param('name') name: string) {
    this.token ??= defer(() => from(sleep(100).then(() => 'token'))).pipe(shareReplay(1));
    return this.token.pipe(switchMap(() => from(async400(`after-shared-${name}`))));
  }

  // Waits for the next signal of a hot Subject, then does its own work (400 ms).
  @Post('after-hot')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  afterHot() {
    return ticks.pipe(
      take(1),
      switchMap(() => from(async400('after-hot'))),
    );
  }

  // A callback API (a driver with callbacks, an EventEmitter) wrapped without a teardown
  // that could stop it: the work goes on after the timeout unsubscribed.
  @Post('callback')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  callback() {
    return new Observable<unknown>((subscriber) => {
      ran('cb-start');
      setTimeout(() => {
        ran('cb-end');
        subscriber.next({ ok: true });
        subscriber.complete();
      }, 400);
    });
  }

  // CPU work handed to a worker thread; the answer is its message.
  @Post('worker')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  inWorker() {
    const id = randomUUID();
    ran('worker-start');
    worker.postMessage(id);
    return new Observable<unknown>((subscriber) => {
      const on = (message: unknown) => {
        if (message !== id) return;
        subscriber.next({ ok: true });
        subscriber.complete();
      };
      worker.on('message', on);
      return () => worker.off('message', on);
    });
  }

  // The README's advice for each of the kept findings below, each checked by a test:
  // the HttpService-like call subscribed by a promise of its answer (the timeout's
  // unsubscription then aborts nothing: the key is held until the service answered).
  @Post('abortable-awaited')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  abortableAwaited() {
    return from(firstValueFrom(this.abortable()));
  }

  // The shared value read first, in an async method that returns the promise of its own work.
  @Post('after-shared-awaited/:name')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  async afterSharedAwaited(@Param('name') name: string) {
    this.awaitedToken ??= defer(() => from(sleep(100).then(() => 'token'))).pipe(shareReplay(1));
    await firstValueFrom(this.awaitedToken);
    await async400(`after-shared-awaited-${name}`);
    return { ok: true };
  }

  // The hot source's next value read first, then the request's own work, in an async method.
  @Post('after-hot-awaited')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  async afterHotAwaited() {
    await firstValueFrom(ticks);
    await async400('after-hot-awaited');
    return { ok: true };
  }

  // The callback API's end as a promise made in the handler (watched).
  @Post('callback-promise')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  callbackPromise() {
    ran('cbp-start');
    return from(
      new Promise((resolve) =>
        setTimeout(() => {
          ran('cbp-end');
          resolve({ ok: true });
        }, 400),
      ),
    );
  }

  // The worker's answer for this job as a promise made in the handler (watched).
  @Post('worker-promise')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  inWorkerPromise() {
    const id = randomUUID();
    ran('worker-promise-start');
    const answered = new Promise((resolve) => {
      const on = (message: unknown) => {
        if (message !== id) return;
        worker.off('message', on);
        ran('worker-promise-end');
        resolve({ ok: true });
      };
      worker.on('message', on);
    });
    worker.postMessage(id);
    return from(answered);
  }

  // Never completes, and the interceptor between never unsubscribes it.
  @Post('endless')
  @Idempotent({ leaseMs: 400, maxHoldMs: 900 })
  @UseInterceptors(LeakyFallbackInterceptor)
  endless() {
    ran('endless-start');
    return interval(50).pipe(switchMap(() => from(sleep(10))));
  }

  // A promise that never settles, as `from(...)` of it: held at most maxHoldMs.
  @Post('never')
  @Idempotent({ leaseMs: 400, maxHoldMs: 900 })
  @UseInterceptors(TimeoutInterceptor)
  never() {
    ran('never-start');
    return NEVER;
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [OnceController],
})
class AppModule {}

beforeAll(async () => {
  await new Promise<void>((resolve) => upstreamServer.listen(0, '127.0.0.1', resolve));
  upstream = `http://127.0.0.1:${(upstreamServer.address() as AddressInfo).port}`;
  // The first fetch of the process loads its HTTP client (over 150 ms on a loaded machine):
  // done here, so that a route's call reaches the service before the route's timeout.
  await (await fetch(`${upstream}/fast`)).text();
});
afterAll(async () => {
  promiseHooks.createHook = realCreateHook;
  upstreamServer.closeAllConnections();
  await new Promise((resolve) => upstreamServer.close(resolve));
  clearInterval(ticker);
  await worker.terminate();
});

describe.each<Platform>(['express', 'fastify'])(
  '@idem/nestjs (rev12d exactly-once) on %s',
  (platform) => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, AppModule));
    });
    afterAll(() => close());

    /** First request times out (408); a retry while `running()` must be 409; after `ended`, it runs again. */
    const heldWhileRunning = async (path: string, started: string, ended: string) => {
      const k = key();
      const s = count(started);
      const e = count(ended);
      expect((await send(url, path, { key: k, body: {} })).status).toBe(408);
      expect(count(ended)).toBe(e);
      expect((await send(url, path, { key: k, body: {} })).status).toBe(409);
      expect(count(started)).toBe(s + 1);
      await until(() => count(ended) > e);
      await sleep(60);
      // nesthono32: its work ran to its end after the 408 went out: the answered_outside marker
      // (500 outcome-not-recorded), never a second run (this asserted 408 and a second run before).
      expect((await send(url, path, { key: k, body: {} })).status).toBe(500);
      expect(count(started)).toBe(s + 1);
    };

    /**
     * A (`/once/<route>/a`) starts the shared source, B joins it 20 ms later; both time out
     * (408) while B's own work (`<route>-b-start`, `<route>-b-end`) runs: B's retry must be 409,
     * not a second run of it.
     */
    const heldAfterShared = async (route: string) => {
      const kB = key();
      const startedB = count(`${route}-b-start`);
      const endedB = count(`${route}-b-end`);
      const [a, b] = await Promise.all([
        send(url, `/once/${route}/a`, { key: key(), body: {} }),
        sleep(20).then(() => send(url, `/once/${route}/b`, { key: kB, body: {} })),
      ]);
      expect(a.status).toBe(408);
      expect(b.status).toBe(408);
      expect(count(`${route}-b-end`)).toBe(endedB);
      // B's work still runs: B's retry must be 409, not a second run of it.
      expect((await send(url, `/once/${route}/b`, { key: kB, body: {} })).status).toBe(409);
      expect(count(`${route}-b-start`)).toBe(startedB + 1);
      await until(() => count(`${route}-b-end`) > endedB);
      return { kB, startedB, endedB };
    };

    it('holds the key while a fetch behind from(promise) runs on after the timeout', async () => {
      await heldWhileRunning('/once/fetch', 'up-slow-recv', 'up-slow-done');
    });

    it('holds the key while the slow call a switchMap chain started runs on after the timeout', async () => {
      await heldWhileRunning('/once/chain', 'up-slow-recv', 'up-slow-done');
    });

    // FINDING (LOW, by design per the README: "work its teardown stops (an HttpService request
    // it aborts) frees the key once stopped"): aborting the outgoing request stops nothing at
    // the service that already received it; the key is released at the timeout and the retry
    // sends the same POST again while the first is still being processed there. Exactly-once
    // then rests on the downstream service. Fix: say so in the README (forward the
    // Idempotency-Key, or a key derived from it, to the downstream call), or hold an aborted
    // outgoing request's key for a grace period (leaseMs) after the abort.
    // Kept open (wt/nest2; re-examined in wt/nestfix): not knowable here. The work goes on in
    // another process; in this one the abort settled the call's promise, and nothing local
    // stands for what the service still does (it may also have stopped, or never started). A
    // grace period after every abort would hold keys that are truly free (a timed-out request
    // whose call the abort did stop), by a guess. The README's "Not seen" list says what to do:
    // forward the Idempotency-Key (or a key derived from it) to the service, or do not let the
    // timeout abort the call: subscribe it through a promise of its answer
    // (`from(firstValueFrom(http.post(...)))`), which is watched and holds the key until the
    // service answered (the test after this one).
    it.fails('holds the key while the service an aborted HttpService-like request reached still processes it', async () => {
      const k = key();
      const received = count('up-slow-recv');
      const done = count('up-slow-done');
      expect((await send(url, '/once/abortable', { key: k, body: {} })).status).toBe(408);
      expect(count('up-slow-done')).toBe(done);
      try {
        expect((await send(url, '/once/abortable', { key: k, body: {} })).status).toBe(409);
        expect(count('up-slow-recv')).toBe(received + 1);
      } finally {
        await until(() => count('up-slow-done') >= count('up-slow-recv'));
      }
    });

    it('holds the key until the service answered a call subscribed through a promise of its answer (the README advice)', async () => {
      await heldWhileRunning('/once/abortable-awaited', 'up-slow-recv', 'up-slow-done');
    });

    for (const kind of ['immediate', 'tick', 'micro', 'timeout20']) {
      it(`holds the key while async work scheduled with ${kind} from the subscription runs`, async () => {
        await heldWhileRunning(`/once/sched/${kind}`, `sched-${kind}-start`, `sched-${kind}-end`);
      });
    }

    it('runs a shared Observable once across requests and holds the key of the one that started it', async () => {
      const before = count('shared-start');
      const k1 = key();
      expect((await send(url, '/once/shared', { key: k1, body: {} })).status).toBe(408);
      // Another request (another key) joins the shared work: it does not run it again.
      expect((await send(url, '/once/shared', { key: key(), body: {} })).status).toBe(408);
      expect((await send(url, '/once/shared', { key: k1, body: {} })).status).toBe(409);
      expect(count('shared-start')).toBe(before + 1);
      await until(() => count('shared-end') > 0);
    });

    // FINDING (MEDIUM): the work a request's Observable starts in an operator (switchMap) runs
    // in the async context the upstream value arrives in. When that upstream is shared and
    // still in flight (a cached token/config fetched once with shareReplay, started by request
    // A), request B's own work is made in A's context: it is counted as A's (holding A's key),
    // and B's call sees no promise of its own. After the timeout unsubscribed B, B's key is
    // released while its work (a non-cancellable promise) still runs, and B's retry runs it a
    // second time. Fix: not fully fixable by context attribution; at least hold a torn-down
    // subscription while promises made *during its subscription's operator callbacks* run (e.g.
    // run follow()'s inner subscriber notifications under the call's context is not enough:
    // the operators are upstream). Document it under "Not seen" (work triggered by a value a
    // shared or hot source emits), and advise `from(promise)` started in the handler itself.
    // Kept open (wt/nest2; re-examined in wt/nestfix): not knowable from an async context. B's
    // work is made in the callback of an operator B subscribed, but that callback is called by
    // the shared source as it emits, in A's context; the promises made there carry A's context
    // and nothing of B's (rxjs does not carry a subscriber's context into what its source
    // calls). Only rewriting the operator chain B returned (rxjs internals) could put B's
    // context back, and the shared source stays shared. The README's "Not seen" list gives the
    // way out: read the shared value first (`await firstValueFrom(token$)`) in an async method
    // that returns the promise of its own work, which is then B's (the test after this one).
    it.fails("holds B's key while B's own work, started after a shared in-flight Observable A started, runs", async () => {
      await heldAfterShared('after-shared');
    });

    it("holds B's key while its own work runs when it read the shared value first (the README advice)", async () => {
      const { kB, startedB, endedB } = await heldAfterShared('after-shared-awaited');
      await until(
        () => count('after-shared-awaited-a-end') >= count('after-shared-awaited-a-start'),
      );
      await sleep(60);
      // Then B's key is no longer held: its work ran to its end after the 408 went out, so the
      // answered_outside marker (500), never a second run (nesthono32: this asserted 408 and a
      // second run before).
      expect((await send(url, '/once/after-shared-awaited/b', { key: kB, body: {} })).status).toBe(
        500,
      );
      expect(count('after-shared-awaited-b-start')).toBe(startedB + 1);
      expect(count('after-shared-awaited-b-end')).toBeGreaterThan(endedB);
    });

    // Kept open (wt/nest2; re-examined in wt/nestfix): not knowable from an async context, as
    // above: the Subject calls the operator's callback in the emitter's context (a timer made
    // outside any request), so the work carries no request's context at all. The README's
    // "Not seen" list: read the value first (`await firstValueFrom(ticks$)`) in an async
    // method that returns the promise of its own work (the test after this one).
    it.fails('holds the key while the work started after a hot Subject emitted runs on', async () => {
      await heldWhileRunning('/once/after-hot', 'after-hot-start', 'after-hot-end');
    });

    it('holds the key while the work of an async method that read the hot value first runs (the README advice)', async () => {
      await heldWhileRunning(
        '/once/after-hot-awaited',
        'after-hot-awaited-start',
        'after-hot-awaited-end',
      );
    });

    // FINDING (LOW, documented in the README's "Not seen"): a callback API wrapped in an
    // Observable without a teardown that stops it (a callback driver, an EventEmitter) is
    // released at the timeout's unsubscription; the retry runs the work a second time beside
    // the first. Fix: hold the key until the subscriber is completed/errored or a grace period
    // (e.g. keep a torn-down subscription held until its `subscriber` is notified or `leaseMs`
    // passes), or keep documenting it as unsupported.
    // Kept open (wt/nest2; re-examined in wt/nestfix): not knowable from the Observable. A
    // callback timer is no promise, so the hooks do not see it; and an Observable whose
    // subscription has no teardown is no sign of work left: `NEVER` is one too, and its key
    // must be freed at the timeout (the last test of this block). Holding a torn-down
    // subscription until its subscriber is notified would hold every such key until maxHoldMs.
    // Watching timers too (async_hooks) would hold keys for timers that are not the request's
    // work (a socket's idle timer, a client's keep-alive made in the request's context). The
    // README's "Not seen" list: give the Observable a teardown that stops its work, or return
    // a promise of its end made in the handler, which is watched (the test after this one).
    it.fails('holds the key while a callback Observable (no teardown) runs on after the timeout', async () => {
      await heldWhileRunning('/once/callback', 'cb-start', 'cb-end');
    });

    it('holds the key while a callback API whose end is a promise made in the handler runs on (the README advice)', async () => {
      await heldWhileRunning('/once/callback-promise', 'cbp-start', 'cbp-end');
    });

    // FINDING (LOW, documented as "Not seen: an event listener"): work handed to a worker
    // thread (or an in-process queue) goes on after the timeout unsubscribed the listener for
    // its answer: the key is released and the retry posts the job a second time. Fix: document
    // the worker/queue pattern explicitly with the workaround (return a promise of the job's
    // end, e.g. `from(once(worker, 'message'))` started in the handler, which is watched).
    // Kept open (wt/nest2; re-examined in wt/nestfix): not knowable from this thread. The job
    // runs in another thread; here, only a message listener waits for its answer, and the
    // timeout's teardown removed it (a listener is no promise and, once removed, nothing). The
    // worker's port is shared by every job, so it says nothing of this one. The README's "Not
    // seen" list: make a promise of the job's end in the handler (resolved by the worker's
    // answer for it), which is watched (the test after this one).
    it.fails('holds the key while a worker thread still runs the job of the first request', async () => {
      await heldWhileRunning('/once/worker', 'worker-start', 'worker-end');
    });

    it('holds the key while the worker runs the job whose answer is a promise made in the handler (the README advice)', async () => {
      await heldWhileRunning('/once/worker-promise', 'worker-promise-start', 'worker-promise-end');
    });

    it('frees a key whose Observable never ends and is never unsubscribed by maxHoldMs, and turns the hooks off', async () => {
      const k = key();
      const at = Date.now();
      const first = await send(url, '/once/endless', { key: k, body: {} });
      expect(first.status).toBe(201);
      let status = 409;
      let again = first;
      for (let i = 0; i < 40 && status === 409; i++) {
        await sleep(100);
        again = await send(url, '/once/endless', { key: k, body: {} });
        status = again.status;
      }
      // Executed again (not replayed): the fallback answer was never the handler's outcome.
      expect(status).toBe(201);
      expect(again.headers['idempotent-replayed']).toBeUndefined();
      expect(Date.now() - at).toBeLessThan(2500);
      await sleep(1500);
      await until(() => live === 0, 2000);
      expect(live).toBe(0);
    });

    it('frees the key of a never-ending Observable unsubscribed at the timeout at once', async () => {
      const k = key();
      const before = count('never-start');
      expect((await send(url, '/once/never', { key: k, body: {} })).status).toBe(408);
      await sleep(50);
      expect((await send(url, '/once/never', { key: k, body: {} })).status).toBe(408);
      expect(count('never-start')).toBe(before + 2);
    });
  },
);

@Controller('outer')
@UseGuards(TenantGuard)
class OuterTimeoutController {
  @Post('cold')
  @Idempotent()
  cold() {
    return defer(() => from(async400('outer-cold')));
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [OuterTimeoutController],
})
class OuterModule {}

describe.each<Platform>(['express', 'fastify'])(
  '@idem/nestjs (rev12d exactly-once, global timeout outside) on %s',
  (platform) => {
    let url = '';
    let close = async () => {};
    beforeAll(async () => {
      ({ url, close } = await startNest(platform, OuterModule, (app) =>
        app.useGlobalInterceptors(new TimeoutInterceptor()),
      ));
    });
    afterAll(() => close());

    it('holds the key while the Observable work runs on after a global (outer) timeout unsubscribed it', async () => {
      const k = key();
      const started = count('outer-cold-start');
      const ended = count('outer-cold-end');
      expect((await send(url, '/outer/cold', { key: k, body: {} })).status).toBe(408);
      expect((await send(url, '/outer/cold', { key: k, body: {} })).status).toBe(409);
      expect(count('outer-cold-start')).toBe(started + 1);
      await until(() => count('outer-cold-end') > ended);
      await sleep(60);
      // nesthono32: its work ran to its end after the 408 went out: the answered_outside marker
      // (500 outcome-not-recorded), never a second run (this asserted 408 and a second run before).
      expect((await send(url, '/outer/cold', { key: k, body: {} })).status).toBe(500);
      expect(count('outer-cold-start')).toBe(started + 1);
    });
  },
);
