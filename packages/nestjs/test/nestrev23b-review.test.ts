// Review round 23b (nestrev23b) of the Nest body-limit answer (platform-body-limit.ts, the
// per-app wrappers of the adapters' `applyVersionFilter` / `requireNonEmptyParams`), after
// nestrev23-review.test.ts. Attacked here: the normal (non-error) request path the wrappers
// touch, exactly-once (no key decision on the 413 path, no answer for a request another handler
// serves), memory over many apps, errors inside the new code, and Nest 11.0.0 (the floor).
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { type IdempotencyContext, PROBLEM_TYPES } from '@idem/http';
import { type Exchange, json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  type ArgumentsHost,
  Catch,
  Controller,
  type ExceptionFilter,
  HttpException,
  type INestApplication,
  Module,
  Patch,
  Post,
  VersioningType,
} from '@nestjs/common';
import { BaseExceptionFilter, HttpAdapterHost, NestFactory } from '@nestjs/core';
import { ExpressAdapter, type NestExpressApplication } from '@nestjs/platform-express';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdemContext, IdempotencyModule, IdempotencyService, Idempotent } from '../src/index.js';
import { count, ran } from './review-kit.js';

type Platform = 'express' | 'fastify';
const PLATFORMS: readonly Platform[] = ['express', 'fastify'];
const bigBody = Buffer.from(JSON.stringify({ pad: 'p'.repeat(2 * 1024 * 1024) }));
const smallBody = Buffer.from(JSON.stringify({ pad: 'p' }));
const key = () => `nestrev23b-${randomUUID()}`;
const jsonHeaders = { 'content-type': 'application/json' };

/** What the apps' global filter saw: an HttpException's status, else the error's code or name. */
const filterSaw: unknown[] = [];
@Catch()
class SeeingFilter extends BaseExceptionFilter implements ExceptionFilter {
  override catch(exception: unknown, host: ArgumentsHost) {
    filterSaw.push(
      exception instanceof HttpException
        ? exception.getStatus()
        : ((exception as { code?: unknown; name?: unknown } | null)?.code ??
            (exception as { name?: unknown } | null)?.name ??
            'other'),
    );
    super.catch(exception, host);
  }
}

/** Every store call, by operation name. */
const storeCalls: string[] = [];
function spiedStore() {
  const store = createMemoryStore();
  return new Proxy(store, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        storeCalls.push(String(name));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

@Controller({ path: 'ver', version: '1' })
@Idempotent({ scope: 'global' })
class VersionedController {
  @Post()
  take(@IdemContext() idem?: IdempotencyContext) {
    return { n: ran('nestrev23b-ver'), keyed: idem !== undefined };
  }
}

@Controller('plain')
@Idempotent({ scope: 'global' })
class PlainController {
  @Post()
  take(@IdemContext() idem?: IdempotencyContext) {
    return { n: ran('nestrev23b-plain'), keyed: idem !== undefined };
  }

  @Patch(':id')
  patch(@IdemContext() idem?: IdempotencyContext) {
    return { n: ran('nestrev23b-patch'), keyed: idem !== undefined };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: spiedStore() as never, onWarning: () => {} })],
  controllers: [VersionedController, PlainController],
})
class ReviewModule {}

interface Served {
  app: INestApplication;
  url: string;
}

async function serve(
  platform: Platform,
  options: {
    module?: new () => object;
    before?: (app: INestApplication) => void;
    adapter?: FastifyAdapter | ExpressAdapter;
  } = {},
): Promise<Served> {
  const module = options.module ?? ReviewModule;
  const settings = { logger: false as const, abortOnError: false };
  const app =
    platform === 'express'
      ? await NestFactory.create<NestExpressApplication>(
          module,
          (options.adapter as ExpressAdapter | undefined) ?? new ExpressAdapter(),
          settings,
        )
      : await NestFactory.create<NestFastifyApplication>(
          module,
          (options.adapter as FastifyAdapter | undefined) ?? new FastifyAdapter(),
          settings,
        );
  app.useGlobalFilters(new SeeingFilter(app.get(HttpAdapterHost).httpAdapter));
  app.enableVersioning({ type: VersioningType.HEADER, header: 'x-api-version' });
  options.before?.(app);
  await app.listen(0, '127.0.0.1');
  const url = (await app.getUrl()).replace('[::1]', '127.0.0.1').replace('localhost', '127.0.0.1');
  return { app, url };
}

const isProblem = (x: Exchange) =>
  x.status === 413 &&
  /^application\/problem\+json/.test(String(x.headers['content-type'])) &&
  (json(x) as { type?: unknown }).type === PROBLEM_TYPES.bodyTooLarge;

/** The platform's own 413, through the app's filter, exactly once. */
function expectPlatform413(x: Exchange, saw: unknown[]) {
  expect(x.status).toBe(413);
  expect(String(x.headers['content-type'])).not.toMatch(/problem/);
  expect(saw).toEqual([413]);
}

const post = (url: string, path: string, body: Buffer, extra: Record<string, string> = {}) =>
  send(url, path, { key: key(), body, headers: { ...jsonHeaders, ...extra } });

// ---------------------------------------------------------------------------------------------
// (1) The normal path through the wrapped adapter methods.

for (const platform of PLATFORMS) {
  describe(`nestrev23b: normal requests on ${platform}`, () => {
    let served: Served;
    beforeAll(async () => {
      served = await serve(platform);
    });
    afterAll(() => served.app.close());

    it('a header-versioned idempotent route: runs once, replays, other versions 404', async () => {
      const k = key();
      const before = count('nestrev23b-ver');
      const options = {
        key: k,
        body: smallBody,
        headers: { ...jsonHeaders, 'x-api-version': '1' },
      };
      const first = await send(served.url, '/ver', options);
      expect(first.status).toBe(201);
      expect(json(first)).toEqual({ n: before + 1, keyed: true });
      const again = await send(served.url, '/ver', options);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(json(again)).toEqual(json(first));
      expect(count('nestrev23b-ver')).toBe(before + 1);
      for (const version of [{ 'x-api-version': '2' }, {}] as Record<string, string>[]) {
        const saw = filterSaw.length;
        const other = await post(served.url, '/ver', smallBody, version);
        expect(other.status).toBe(404);
        expect(filterSaw.slice(saw)).toEqual([404]);
      }
      expect(count('nestrev23b-ver')).toBe(before + 1);
    });

    it('a path parameter: served when given, Nest 404 when empty (param check kept)', async () => {
      const before = count('nestrev23b-patch');
      const given = await send(served.url, '/plain/7', {
        method: 'PATCH',
        key: key(),
        body: smallBody,
        headers: jsonHeaders,
      });
      expect(given.status).toBe(200);
      const empty = await send(served.url, '/plain/', {
        method: 'PATCH',
        key: key(),
        body: smallBody,
        headers: jsonHeaders,
      });
      expect(empty.status).toBe(404);
      expect(count('nestrev23b-patch')).toBe(before + 1);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// (2) Exactly-once and isolation.

for (const platform of PLATFORMS) {
  describe(`nestrev23b: the 413 path and the key on ${platform}`, () => {
    let served: Served;
    beforeAll(async () => {
      served = await serve(platform);
    });
    afterAll(() => served.app.close());

    it('a refused keyed body makes no store call; the same key then runs once', async () => {
      const k = key();
      const calls = storeCalls.length;
      const big = await send(served.url, '/plain', { key: k, body: bigBody, headers: jsonHeaders });
      expect(isProblem(big)).toBe(true);
      expect(storeCalls.slice(calls)).toEqual([]);
      const before = count('nestrev23b-plain');
      const small = await send(served.url, '/plain', {
        key: k,
        body: smallBody,
        headers: jsonHeaders,
      });
      expect(small.status).toBe(201);
      expect(small.headers['idempotent-replayed']).toBeUndefined();
      expect(count('nestrev23b-plain')).toBe(before + 1);
    });
  });
}

// Finding, MEDIUM (Express; isolation: idem answers for a request another handler serves),
// fixed: an Express Router (or sub-app) the app mounts before Nest's routes serves the path of
// an idempotent Nest route; the small body runs the router's (non-idempotent) handler, yet the
// refused body got idem's problem: the search skipped every layer but routes. Now a mounted
// router is searched as Express would (its routes on the rest of the path), a mounted app whose
// routes cannot be read makes the answer unknown: the app's handling.
describe('nestrev23b: a router the app mounts before Nest routes, on express', () => {
  let served: Served;
  const mounted: string[] = [];
  type Handler = (req: unknown, res: { json(b: unknown): void }) => void;
  type Routes = { post(path: string, h: Handler): void; patch(path: string, h: Handler): void };
  const answer =
    (by: string): Handler =>
    (_req, res) => {
      mounted.push(by);
      res.json({ route: by, keyed: false });
    };
  beforeAll(async () => {
    // Express itself, as `@nestjs/platform-express` has it (not a dependency of this package).
    const express = createRequire(import.meta.resolve('@nestjs/platform-express'))('express') as {
      Router(): Routes;
      (): Routes;
    };
    served = await serve('express', {
      before: (app) => {
        (app as NestExpressApplication).useBodyParser('json');
        const root = express.Router();
        root.post('/plain', answer('root router'));
        const prefixed = express.Router();
        prefixed.patch('/8', answer('prefixed router'));
        const sub = express();
        sub.post('/', answer('sub-app'));
        const instance = app.getHttpAdapter().getInstance() as {
          use(path: string, handler: unknown): void;
        };
        instance.use('/', root);
        instance.use('/plain', prefixed);
        instance.use('/ver', sub);
      },
    });
  });
  afterAll(() => served.app.close());

  for (const row of [
    { method: 'POST', path: '/plain', by: 'root router' },
    { method: 'PATCH', path: '/plain/8', by: 'prefixed router' },
    { method: 'POST', path: '/ver', by: 'sub-app' },
    // Paths none of them serves: the Nest route's.
    { method: 'PATCH', path: '/plain/9', by: undefined },
  ])
    it(`${row.method} ${row.path}: idem's problem exactly when the small body runs the keyed Nest route`, async () => {
      const options = (body: Buffer) => ({
        method: row.method,
        key: key(),
        body,
        headers: { ...jsonHeaders, 'x-api-version': '1' },
      });
      const seen = mounted.length;
      const small = await send(served.url, row.path, options(smallBody));
      expect(small.status).toBeLessThan(300);
      expect(mounted.slice(seen)).toEqual(row.by ? [row.by] : []);
      expect((json(small) as { keyed?: unknown }).keyed).toBe(row.by === undefined);
      const saw = filterSaw.length;
      const big = await send(served.url, row.path, options(bigBody));
      if (row.by) expectPlatform413(big, filterSaw.slice(saw));
      else {
        expect(isProblem(big)).toBe(true);
        expect(filterSaw.slice(saw)).toEqual([]);
      }
    });
});

// ---------------------------------------------------------------------------------------------
// (3) Memory over many apps.

for (const platform of PLATFORMS) {
  describe(`nestrev23b: 100 apps made and closed on ${platform}`, () => {
    it('leave no service, adapter or app behind, and the heap does not grow with them', async () => {
      setFlagsFromString('--expose-gc');
      const gc = runInNewContext('gc') as () => void;
      const settle = async () => {
        for (let i = 0; i < 4; i++) {
          gc();
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      };
      const refs: WeakRef<object>[] = [];
      const oneRound = async (n: number) => {
        for (let i = 0; i < n; i++) {
          const app =
            platform === 'express'
              ? await NestFactory.create(ReviewModule, new ExpressAdapter(), { logger: false })
              : await NestFactory.create(ReviewModule, new FastifyAdapter(), { logger: false });
          app.enableVersioning({ type: VersioningType.HEADER, header: 'x-api-version' });
          await app.init();
          refs.push(new WeakRef(app.get(IdempotencyService)));
          refs.push(new WeakRef(app.getHttpAdapter()));
          await app.close();
        }
      };
      await oneRound(20);
      await settle();
      const base = process.memoryUsage().heapUsed;
      await oneRound(100);
      await settle();
      const grown = process.memoryUsage().heapUsed - base;
      const alive = refs.filter((ref) => ref.deref() !== undefined).length;
      // One app's service and adapter may still be referenced by the last closures run.
      expect(alive).toBeLessThanOrEqual(4);
      expect(grown).toBeLessThan(8 * 1024 * 1024);
    }, 60_000);
  });
}

// ---------------------------------------------------------------------------------------------
// (4) Errors inside the new code fall back to the platform's behaviour.

// Finding, MEDIUM (both platforms, crash of the request), fixed: an error thrown while the
// refused request's route was looked up (Express's router of another shape, the adapter's host
// name reader throwing) replaced the platform's 413 with a 500 of that error (Express: the
// middleware threw; Fastify: the route's error handler threw it to Nest's). Now the lookup is
// guarded: any error in it hands the platform's own error on, as without idem.
for (const platform of PLATFORMS) {
  describe(`nestrev23b: the body-limit code failing inside on ${platform}`, () => {
    let served: Served;
    beforeAll(async () => {
      served = await serve(platform);
    });
    afterAll(() => served.app.close());

    it("the adapter's host name reader throws: the platform's 413, once, through the app's filter", async () => {
      const adapter = served.app.getHttpAdapter() as unknown as {
        getRequestHostname(request: unknown): unknown;
      };
      const own = adapter.getRequestHostname;
      adapter.getRequestHostname = () => {
        throw new TypeError('changed shape');
      };
      try {
        const saw = filterSaw.length;
        expectPlatform413(await post(served.url, '/plain', bigBody), filterSaw.slice(saw));
      } finally {
        adapter.getRequestHostname = own;
      }
      expect(isProblem(await post(served.url, '/plain', bigBody))).toBe(true);
    });

    if (platform === 'express')
      it("Express's router stack of odd shapes: the platform's 413 every time, normal requests unchanged", async () => {
        const router = (
          served.app.getHttpAdapter().getInstance() as { router: { stack: unknown[] } }
        ).router;
        const stack = router.stack;
        // Express's router walks its stack by index; only a reader that iterates sees these.
        const odd: unknown[] = [
          { route: { stack: 5 }, match: () => true },
          { route: { stack: [null] }, match: () => true },
          {
            get route() {
              throw new Error('no route');
            },
          },
          { route: { stack: [{ method: 'post', handle: 1 }] }, match: () => 'yes' },
          null,
        ];
        for (const layer of odd) {
          Object.defineProperty(stack, Symbol.iterator, {
            configurable: true,
            value: function* () {
              yield layer;
              yield* Array.prototype.values.call(stack);
            },
          });
          try {
            const saw = filterSaw.length;
            const big = await post(served.url, '/plain', bigBody);
            // Either the platform's own 413 through the app's filter, or (a layer that lets
            // the lookup go on) idem's problem: never a 500 of the middleware's own error.
            if (!isProblem(big)) expectPlatform413(big, filterSaw.slice(saw));
            else expect(filterSaw.slice(saw)).toEqual([]);
            const small = await post(served.url, '/plain', smallBody);
            expect(small.status).toBe(201);
          } finally {
            delete (stack as { [Symbol.iterator]?: unknown })[Symbol.iterator];
          }
        }
        expect(isProblem(await post(served.url, '/plain', bigBody))).toBe(true);
      });
  });
}

// ---------------------------------------------------------------------------------------------
// (5) Nest 11.0.0, the floor: its Fastify adapter has no `requireNonEmptyParams` and runs a
// route with an empty parameter (find-my-way matches it).

// Finding, LOW (Fastify on Nest 11.0.0, wrong status), fixed: the route's error handler refused
// every request with an empty parameter as Nest 12's adapter does (its 404), but Nest 11.0.0
// runs the route with it: the keyed refused body got the platform's 413, not idem's problem.
// Now only a route whose handler Nest's adapter wrapped with that check is refused so.
describe('nestrev23b: an empty path parameter under a Fastify adapter as Nest 11.0.0 has it', () => {
  let served: Served;
  beforeAll(async () => {
    const adapter = new FastifyAdapter();
    // As Nest 11.0.0: the handler registered as it is (the method exists on 12 only).
    (
      adapter as unknown as { requireNonEmptyParams(u: unknown, h: unknown): unknown }
    ).requireNonEmptyParams = (_url, handler) => handler;
    served = await serve('fastify', { adapter });
  });
  afterAll(() => served.app.close());

  it("idem's problem exactly when the small body runs the keyed idempotent route", async () => {
    const options = (body: Buffer) => ({
      method: 'PATCH',
      key: key(),
      body,
      headers: jsonHeaders,
    });
    const small = await send(served.url, '/plain/', options(smallBody));
    expect(small.status).toBe(200);
    expect((json(small) as { keyed?: unknown }).keyed).toBe(true);
    expect(isProblem(await send(served.url, '/plain/', options(bigBody)))).toBe(true);
  });
});
