import 'reflect-metadata';
import { AsyncLocalStorage, createHook } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import * as v8 from 'node:v8';
import { json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  BadRequestException,
  Controller,
  Get,
  Module,
  Post,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import { defer, mergeMap, of, throwError } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';
import { count, ran, TimeoutInterceptor } from './review-kit.js';
import { type Platform, startNest, TenantGuard } from './scenario-app.js';

/**
 * rev12d review of the Observable-work commits (ff45789, 85a62cf, 46bb741, f7ee59f): V8's
 * promise hooks are process-global; what one request's window sees, and what it leaves on.
 *
 * `v8.promiseHooks.createHook` is wrapped here (the package calls it through the same
 * object at each window): `live` is how many of its hooks are enabled now.
 */
const promiseHooks = v8.promiseHooks;
const realCreateHook = promiseHooks.createHook;
let live = 0;
let created = 0;
promiseHooks.createHook = ((hooks: Parameters<typeof realCreateHook>[0]) => {
  const stop = realCreateHook(hooks);
  // Node 20's own AsyncLocalStorage enables async_hooks through this function too (with
  // before/after hooks, once, for good): only the package's hooks (init, settled) count.
  if ('before' in hooks || 'after' in hooks) return stop;
  live++;
  created++;
  let stopped = false;
  return () => {
    if (!stopped) {
      stopped = true;
      live--;
    }
    stop();
  };
}) as typeof realCreateHook;

/**
 * Gates the test holds: a route whose gate is armed waits until the test opens it (10 s at
 * most) instead of its usual time, so "A still runs" and "B still runs" do not depend on how
 * fast the machine sends 30 requests (a timing flake under CI's load, seen at the
 * `iso-slow-end` count).
 */
const gates = new Map<string, { opened: Promise<void>; isOpen: boolean; open: () => void }>();
function armGate(name: string): () => void {
  let open = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  const gate = {
    opened,
    isOpen: false,
    open: () => {
      gate.isOpen = true;
      gates.delete(name);
      open();
    },
  };
  gates.set(name, gate);
  return gate.open;
}
/** Waits for the gate when armed (at most 10 s), else `ms`. */
async function hold(name: string, ms: number): Promise<void> {
  const gate = gates.get(name);
  if (!gate) return sleep(ms);
  // No promise of A's context may stay pending once the gate opened (the package counts
  // them as A's work): the 10 s fallback is a timer cleared then, not a second promise.
  let timer: NodeJS.Timeout | undefined;
  await new Promise<void>((resolve) => {
    timer = setTimeout(resolve, 10_000);
    void gate.opened.then(resolve);
  });
  clearTimeout(timer);
}

const key = () => `rev12d-iso-${randomUUID()}`;
const until = async (check: () => boolean, ms = 3000) => {
  for (let waited = 0; waited < ms && !check(); waited += 10) await sleep(10);
};

/** An app's own context (nestjs-cls, OpenTelemetry's context manager on Node 20). */
const appStore = new AsyncLocalStorage<{ tag: string }>();

@Controller('iso')
@UseGuards(TenantGuard)
class IsoController {
  private consuming = false;
  private consumingOutside = false;
  /** Runs a function in the async context the controller was made in (outside any request). */
  private readonly outsideRequests = AsyncLocalStorage.snapshot();

  @Post('slow')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  slow() {
    return defer(async () => {
      ran('iso-slow-start');
      await hold('iso-slow', 400);
      ran('iso-slow-end');
      return { ok: true };
    });
  }

  @Post('quick')
  @Idempotent()
  quick() {
    return of({ n: ran('iso-quick') });
  }

  // Not idempotent: a long chain of promises of its own, in another request's context.
  @Post('busy')
  async busy() {
    ran('iso-busy-start');
    // A long promise chain in another request's context: until the test opens the gate when
    // it is armed (10 s at most), else 1.5 s.
    const gate = gates.get('iso-busy');
    const until = performance.now() + (gate ? 10_000 : 1_500);
    while (performance.now() < until && !(gate?.isOpen ?? false)) await sleep(25);
    ran('iso-busy-end');
    return { ok: true };
  }

  // The first call lazily starts a client's background loop (a queue consumer's poll loop,
  // a pub/sub reader, a pool's keep-alive pinger): one promise of it is always pending. The
  // request's own work is 300 ms.
  @Post('lazy')
  @Idempotent({ leaseMs: 500, maxHoldMs: 2500 })
  @UseInterceptors(TimeoutInterceptor)
  lazy() {
    if (!this.consuming) {
      this.consuming = true;
      void (async () => {
        while (this.consuming) await sleep(30);
      })();
    }
    return defer(async () => {
      ran('iso-lazy-start');
      await sleep(300);
      ran('iso-lazy-end');
      return { ok: true };
    });
  }

  // The README's advice for such a client: started outside the request's async context
  // (here with a snapshot taken when the controller was made; or in onModuleInit).
  @Post('lazy-outside')
  @Idempotent({ leaseMs: 500, maxHoldMs: 2500 })
  @UseInterceptors(TimeoutInterceptor)
  lazyOutside() {
    if (!this.consumingOutside) {
      this.consumingOutside = true;
      this.outsideRequests(() => {
        void (async () => {
          while (this.consumingOutside) await sleep(30);
        })();
      });
    }
    return defer(async () => {
      ran('iso-lazy-outside-start');
      await sleep(300);
      ran('iso-lazy-outside-end');
      return { ok: true };
    });
  }

  // An async method that resolves to a value: followed by its promise alone.
  @Post('async-value')
  @Idempotent()
  async asyncValue() {
    await sleep(5);
    return { n: ran('iso-async-value') };
  }

  @Post('sync-throw')
  @Idempotent()
  syncThrow() {
    void sleep(50);
    throw new BadRequestException('no');
  }

  @Post('obs-error')
  @Idempotent()
  obsError() {
    return defer(async () => {
      await sleep(20);
      return 1;
    }).pipe(mergeMap(() => throwError(() => new BadRequestException('no'))));
  }

  @Post('async-throw')
  @Idempotent()
  async asyncThrow() {
    await sleep(20);
    throw new BadRequestException('no');
  }

  @Post('als')
  @Idempotent()
  als() {
    return defer(() =>
      appStore.run({ tag: 'mine' }, async () => {
        await sleep(10);
        await Promise.all([sleep(5), Promise.resolve()]);
        return { tag: appStore.getStore()?.tag ?? null };
      }),
    );
  }

  stopPoller() {
    this.consuming = false;
    this.consumingOutside = false;
  }
}

/** A decorator that wraps the method (logging, metrics), as many apps stack above or below. */
function Logged(): MethodDecorator {
  return (_target, _key, descriptor: PropertyDescriptor) => {
    const original = descriptor.value as (...args: unknown[]) => unknown;
    const wrapped = function (this: unknown, ...args: unknown[]) {
      ran('logged');
      return original.apply(this, args);
    };
    for (const k of Reflect.getOwnMetadataKeys(original)) {
      Reflect.defineMetadata(k, Reflect.getOwnMetadata(k, original), wrapped);
    }
    descriptor.value = wrapped;
    return descriptor;
  };
}

@Controller('wrapped')
@UseGuards(TenantGuard)
class WrappedController {
  @Logged()
  @Post('above')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  above() {
    return defer(async () => {
      ran('wrapped-above-start');
      await sleep(400);
      ran('wrapped-above-end');
      return { ok: true };
    });
  }

  @Post('below')
  @Idempotent()
  @UseInterceptors(TimeoutInterceptor)
  @Logged()
  below() {
    return defer(async () => {
      ran('wrapped-below-start');
      await sleep(400);
      ran('wrapped-below-end');
      return { ok: true };
    });
  }
}

// No @Idempotent anywhere: must never enable a hook.
@Controller('plain')
class PlainController {
  // Reports whether a promise hook of the package is enabled while it runs.
  @Post('probe')
  async probe() {
    await sleep(5);
    return { live };
  }

  @Post('obs')
  obs() {
    return defer(async () => {
      await sleep(5);
      return { n: ran('plain-obs') };
    });
  }
}

// Idempotent on the class: an exempted route and a GET (no key needed) run untracked.
@Controller('classwide')
@Idempotent()
class ClassWideController {
  @Post('exempt')
  @Idempotent(false)
  exempt() {
    return defer(async () => {
      await sleep(5);
      return { n: ran('cw-exempt') };
    });
  }

  @Get('read')
  read() {
    return defer(async () => {
      await sleep(5);
      return { n: ran('cw-read') };
    });
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [IsoController, PlainController, ClassWideController, WrappedController],
})
class AppModule {}

describe.each<Platform>(['express', 'fastify'])(
  '@idem/nestjs (rev12d isolation) on %s',
  (platform) => {
    let url = '';
    let close = async () => {};
    let controller: IsoController | undefined;
    beforeAll(async () => {
      const started = await startNest(platform, AppModule);
      ({ url, close } = started);
      controller = started.app.get(IsoController);
    });
    afterAll(async () => {
      controller?.stopPoller();
      await close();
    });

    it('keeps A held while concurrent requests open and close their own windows, and frees it when A ended though B still runs', async () => {
      const k = key();
      const started = count('iso-slow-start');
      const ended = count('iso-slow-end');
      const busyEnded = count('iso-busy-end');
      const openA = armGate('iso-slow');
      const openB = armGate('iso-busy');
      expect((await send(url, '/iso/slow', { key: k, body: {} })).status).toBe(408);
      // B (not idempotent) runs a long promise chain; 30 idempotent requests open and close windows.
      const busy = send(url, '/iso/busy', { body: {} });
      const quick = await Promise.all(
        Array.from({ length: 30 }, () => send(url, '/iso/quick', { key: key(), body: {} })),
      );
      expect(quick.every((r) => r.status === 201)).toBe(true);
      // A's work still runs: its key must still be held.
      expect(count('iso-slow-end')).toBe(ended);
      expect((await send(url, '/iso/slow', { key: k, body: {} })).status).toBe(409);
      openA();
      await until(() => count('iso-slow-end') > ended);
      await sleep(50);
      // A ended; B's promises (another request's context) must not hold A's key.
      expect(count('iso-busy-end')).toBe(busyEnded);
      // nesthono32: its work ran to its end after the 408 went out: the answered_outside marker
      // (500 outcome-not-recorded), never a second run (this asserted 408 and a second run before).
      expect((await send(url, '/iso/slow', { key: k, body: {} })).status).toBe(500);
      expect(count('iso-slow-start')).toBe(started + 1);
      openB();
      expect((await busy).status).toBe(201);
    });

    // FINDING (MEDIUM): a client the handler lazily starts on its first call (a consumer's
    // poll loop, a pub/sub reader, a keep-alive pinger) keeps running in that call's async
    // context; its promises are counted as the call's work, so when that request was answered
    // by an interceptor (a timeout) its key stays held (409 to every retry) until maxHoldMs,
    // 1 hour by default, although its own work ended long before, and every promise in the
    // process pays the hooks all that time. Bounded, never unsafe. Fix: stop counting at the
    // end of the last subscription for promises whose chain does not lead back to the
    // subscription (e.g. count only promises made while a subscription is open or from a
    // promise counted before; run the subscription's async callbacks through an
    // AsyncResource that is destroyed at teardown), or document that clients must be created
    // outside handlers (onModuleInit) and bound with AsyncResource.bind.
    // Kept open (wt/nest2; re-examined in wt/nestfix): freeing this key would weaken
    // exactly-once. To the promise hooks the loop is work the handler started in its own
    // context and left running, exactly as fire-and-forget work of the request is
    // (`void this.audit.write(...)`, a `from(work())` whose subscription the timeout ended):
    // both run on after the subscription ended, both may still write. Nothing tells a client's
    // endless loop from the request's last write (no promise of either is tied to the
    // subscription), and freeing the key while the latter runs lets a retry run the handler
    // beside it. The hold is bounded (maxHoldMs), never unsafe. Documented in the README: start
    // such clients outside the request (onModuleInit, or a function run through an
    // `AsyncLocalStorage.snapshot()` taken at startup); the advice is checked by the test after
    // the next one.
    let lazyKey = '';
    let lazyAt = 0;
    it.fails('frees the key of the request that lazily started a background loop once its own work ended', async () => {
      const k = key();
      lazyKey = k;
      lazyAt = Date.now();
      const started = count('iso-lazy-start');
      const ended = count('iso-lazy-end');
      expect((await send(url, '/iso/lazy', { key: k, body: {} })).status).toBe(408);
      await until(() => count('iso-lazy-end') > ended);
      await sleep(100);
      expect((await send(url, '/iso/lazy', { key: k, body: {} })).status).toBe(408);
      expect(count('iso-lazy-start')).toBe(started + 2);
    });

    it('still frees the key of the request that started the loop by maxHoldMs (bounded), and turns the hooks off', async () => {
      expect(lazyKey).not.toBe('');
      let status = 409;
      for (let i = 0; i < 60 && status === 409; i++) {
        await sleep(100);
        status = (await send(url, '/iso/lazy', { key: lazyKey, body: {} })).status;
      }
      expect(status).toBe(408);
      // maxHoldMs 2500 + leaseMs 500, with slack.
      expect(Date.now() - lazyAt).toBeLessThan(4500);
      await until(() => live === 0, 2000);
      expect(live).toBe(0);
    });

    it('frees the key of a request whose lazily started loop runs outside its async context (the README advice), and turns the hooks off', async () => {
      const k = key();
      const started = count('iso-lazy-outside-start');
      const ended = count('iso-lazy-outside-end');
      expect((await send(url, '/iso/lazy-outside', { key: k, body: {} })).status).toBe(408);
      expect((await send(url, '/iso/lazy-outside', { key: k, body: {} })).status).toBe(409);
      await until(() => count('iso-lazy-outside-end') > ended);
      await sleep(100);
      // nesthono32: its work ran to its end after the 408 went out: the answered_outside marker
      // (500 outcome-not-recorded), never a second run (this asserted 408 and a second run before).
      expect((await send(url, '/iso/lazy-outside', { key: k, body: {} })).status).toBe(500);
      expect(count('iso-lazy-outside-start')).toBe(started + 1);
      await until(() => live === 0, 2000);
      expect(live).toBe(0);
    });

    it('leaves no promise hook enabled after errors, timeouts and answers', async () => {
      await until(() => live === 0, 4000);
      const paths = [
        '/iso/sync-throw',
        '/iso/obs-error',
        '/iso/async-throw',
        '/iso/quick',
        '/iso/slow',
      ];
      const before = created;
      for (const path of paths) {
        const r = await send(url, path, { key: key(), body: {} });
        expect(r.status).toBeLessThan(500);
      }
      expect(created).toBeGreaterThan(before);
      await until(() => live === 0, 2000);
      expect(live).toBe(0);
    });

    it('enables no promise hook for a route that is not idempotent, exempted, or needs no key', async () => {
      await until(() => live === 0, 4000);
      const before = created;
      for (let i = 0; i < 5; i++) {
        expect((await send(url, '/plain/obs', { key: key(), body: {} })).status).toBe(201);
        expect((await send(url, '/classwide/exempt', { key: key(), body: {} })).status).toBe(201);
        expect((await send(url, '/classwide/read', { method: 'GET' })).status).toBe(200);
      }
      expect(created).toBe(before);
      expect(live).toBe(0);
    });

    it('enables no promise hook for an idempotent route whose handler is an async method resolving to a value', async () => {
      await until(() => live === 0, 4000);
      const before = created;
      for (let i = 0; i < 5; i++) {
        expect((await send(url, '/iso/async-value', { key: key(), body: {} })).status).toBe(201);
      }
      expect(created).toBe(before);
      expect(live).toBe(0);
    });

    for (const where of ['above', 'below']) {
      it(`holds the key of a route wrapped by another method decorator ${where} @Idempotent()`, async () => {
        const k = key();
        const started = count(`wrapped-${where}-start`);
        const ended = count(`wrapped-${where}-end`);
        expect((await send(url, `/wrapped/${where}`, { key: k, body: {} })).status).toBe(408);
        expect((await send(url, `/wrapped/${where}`, { key: k, body: {} })).status).toBe(409);
        expect(count(`wrapped-${where}-start`)).toBe(started + 1);
        await until(() => count(`wrapped-${where}-end`) > ended);
      });
    }

    // FINDING (LOW): V8's promise hooks are process-wide: while any idempotent request's
    // Observable work is watched (up to maxHoldMs, 1 h by default, see the lazily started loop
    // above), every promise of every route pays them, idempotent or not: measured at about
    // 2x the cost of a bare `await` (1e6 awaits: 120-130 ms -> 230 ms on Node 20, 54 -> 121 ms
    // on Node 24). The README says "promises cost a little more meanwhile"; a route that is not
    // @Idempotent does not pay nothing. Fix: make following an Observable's promises opt-in
    // (an option, or `@Idempotent({ followObservable: true })`), so apps that need none of it
    // never enable the hooks; and say the cost is process-wide in the README.
    // Kept open by design (wt/nest2; re-examined in wt/nestfix): not possible with what the
    // runtime offers. V8's promise hooks (`v8.promiseHooks`) and async_hooks are process-wide:
    // there is no hook for the promises of one async context only, so while one request's
    // Observable work is watched, every promise of the process goes through the hook (which
    // returns at once for a promise made outside a watched call). The README says the cost is
    // process-wide, with these figures, and how to avoid it: `followObservables: false`
    // (module option, test/follow-off.test.ts) never enables the hooks; a route whose handler
    // is an `async` method (one that does not resolve to an Observable) is followed by its
    // promise, without them. By default this test's behaviour stays as it is.
    it.fails('enables no promise hook while a route that is not idempotent runs beside a watched request', async () => {
      const k = key();
      const ended = count('iso-slow-end');
      const slow = send(url, '/iso/slow', { key: k, body: {} });
      await sleep(50);
      const probe = await send(url, '/plain/probe', { body: {} });
      expect(probe.status).toBe(201);
      await slow;
      await until(() => count('iso-slow-end') > ended);
      expect(json(probe)).toEqual({ live: 0 });
    });

    it("keeps an app's AsyncLocalStorage, async_hooks and promiseHooks users working across windows", async () => {
      let hookInits = 0;
      const userHook = createHook({
        init(_id, type) {
          if (type === 'PROMISE') hookInits++;
        },
      }).enable();
      let v8Inits = 0;
      const stopV8 = promiseHooks.onInit(() => {
        v8Inits++;
      });
      try {
        const r = await send(url, '/iso/als', { key: key(), body: {} });
        expect(r.status).toBe(201);
        expect(json(r)).toEqual({ tag: 'mine' });
        await until(() => live === 0, 2000);
        // After the package's hook was stopped, the others still see promises.
        const h = hookInits;
        const v = v8Inits;
        await Promise.resolve().then(() => 1);
        expect(hookInits).toBeGreaterThan(h);
        expect(v8Inits).toBeGreaterThan(v);
      } finally {
        userHook.disable();
        stopV8();
      }
    });
  },
);

afterAll(() => {
  promiseHooks.createHook = realCreateHook;
});
