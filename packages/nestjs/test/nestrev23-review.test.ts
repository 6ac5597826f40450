// Review round 23 (nestrev23) of the nestfix merge: the platforms' own body limit answered with
// idem's body-too-large problem for keyed requests to `@Idempotent()` routes (Fastify: a per-route
// error handler set in an onRoute hook; Express: an error middleware that looks the request's
// routes up in Express's router), and the controller instances Nest calls routes on
// (`IdempotencyService.controllerInstances`, `HandlerRun.calledAs`).
//
// The oracle of the routing rows: the same request with a small body. idem's problem is right
// for the big body exactly when the small one ran an `@Idempotent()` route that took its key
// (the handler says so, from `@IdemContext()`); every other big request must reach the app's own
// handling (its global filter) with the platform's 413, once.
import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { type IdempotencyContext, PROBLEM_TYPES } from '@idem/http';
import { type Exchange, json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  type ArgumentsHost,
  Body,
  Catch,
  Controller,
  Delete,
  type DynamicModule,
  type ExceptionFilter,
  HttpException,
  type INestApplication,
  Module,
  Options,
  Patch,
  Post,
  Put,
  Scope,
  UseInterceptors,
  VersioningType,
} from '@nestjs/common';
import { BaseExceptionFilter, HttpAdapterHost, NestFactory } from '@nestjs/core';
import { ExpressAdapter, type NestExpressApplication } from '@nestjs/platform-express';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdemContext, IdempotencyModule, IdempotencyService, Idempotent } from '../src/index.js';
import { hostPattern } from '../src/platform-body-limit.js';
import { count, jobs, LazyWorkerPipe, ran, stopWorker, TimeoutInterceptor } from './review-kit.js';

/** Fastify itself, as `@nestjs/platform-fastify` has it (not a dependency of this package). */
const fastify = createRequire(import.meta.resolve('@nestjs/platform-fastify'))(
  'fastify',
) as () => FastifyInstance;
/** Fastify's instance type, as Nest's Fastify application names it. */
type FastifyInstance = ReturnType<
  ReturnType<NestFastifyApplication['getHttpAdapter']>['getInstance']
>;

type Platform = 'express' | 'fastify';
const PLATFORMS: readonly Platform[] = ['express', 'fastify'];
const TWO_MIB = 2 * 1024 * 1024;
const bigBody = Buffer.from(JSON.stringify({ pad: 'p'.repeat(TWO_MIB) }));
const smallBody = Buffer.from(JSON.stringify({ pad: 'p' }));
const key = () => `nestrev23-${randomUUID()}`;

/** What every app's global filter saw: the status of an HttpException, else the error's code. */
const appSaw: unknown[] = [];
@Catch()
class AppFilter extends BaseExceptionFilter implements ExceptionFilter {
  override catch(exception: unknown, host: ArgumentsHost) {
    appSaw.push(
      exception instanceof HttpException
        ? exception.getStatus()
        : ((exception as { code?: unknown } | null)?.code ?? 'other'),
    );
    super.catch(exception, host);
  }
}

/** What a handler answers: which route ran, and whether it ran with the request's key. */
const reached = (route: string, idem: IdempotencyContext | undefined) => ({
  route,
  keyed: idem !== undefined,
});

interface Served {
  app: INestApplication;
  url: string;
  close(): Promise<void>;
}

async function serve(
  platform: Platform,
  module: new () => object,
  configure?: (app: INestApplication) => void,
  adapter?: FastifyAdapter,
): Promise<Served> {
  const app =
    platform === 'express'
      ? await NestFactory.create<NestExpressApplication>(module, new ExpressAdapter(), {
          logger: false,
          abortOnError: false,
        })
      : await NestFactory.create<NestFastifyApplication>(module, adapter ?? new FastifyAdapter(), {
          logger: false,
          abortOnError: false,
        });
  app.useGlobalFilters(new AppFilter(app.get(HttpAdapterHost).httpAdapter));
  configure?.(app);
  await app.listen(0, '127.0.0.1');
  const url = (await app.getUrl()).replace('[::1]', '127.0.0.1').replace('localhost', '127.0.0.1');
  return { app, url, close: () => app.close() };
}

function served(
  platform: Platform,
  module: new () => object,
  configure?: (app: INestApplication) => void,
) {
  const app: Served = { app: undefined as never, url: '', close: async () => {} };
  beforeAll(async () => {
    Object.assign(app, await serve(platform, module, configure));
  });
  afterAll(() => app.close());
  return app;
}

const isProblem = (x: Exchange) =>
  x.status === 413 &&
  /^application\/problem\+json/.test(String(x.headers['content-type'])) &&
  (json(x) as { type?: unknown }).type === PROBLEM_TYPES.bodyTooLarge;

/** The platform's 413, through the app's own filter (exactly once). */
function expectAppHandled(x: Exchange, saw: unknown[]) {
  expect(x.status).toBe(413);
  expect(String(x.headers['content-type'])).not.toMatch(/problem/);
  expect(saw).toEqual([413]);
}

// ---------------------------------------------------------------------------------------------
// Routing: which requests get idem's 413.

@Controller('multi')
class MultiController {
  @Post()
  @Idempotent({ scope: 'global' })
  create(@IdemContext() idem?: IdempotencyContext) {
    return reached('multi.create', idem);
  }

  @Patch()
  plainPatch(@IdemContext() idem?: IdempotencyContext) {
    return reached('multi.plainPatch', idem);
  }

  // Idempotent, but PUT needs no key by default.
  @Put()
  @Idempotent({ scope: 'global' })
  put(@IdemContext() idem?: IdempotencyContext) {
    return reached('multi.put', idem);
  }

  @Delete()
  @Idempotent({ scope: 'global', methods: ['DELETE'] })
  remove(@IdemContext() idem?: IdempotencyContext) {
    return reached('multi.remove', idem);
  }

  @Options()
  @Idempotent({ scope: 'global' })
  options(@IdemContext() idem?: IdempotencyContext) {
    return reached('multi.options', idem);
  }
}

@Controller('opt')
class OptionalKeyController {
  @Post()
  @Idempotent({ scope: 'global', required: false })
  take(@IdemContext() idem?: IdempotencyContext) {
    return reached('opt.take', idem);
  }
}

@Controller({ path: 'hosted', host: 'api.rev23.test' })
@Idempotent({ scope: 'global' })
class HostedController {
  @Post()
  take(@IdemContext() idem?: IdempotencyContext) {
    return reached('hosted.take', idem);
  }
}

@Controller({ path: 'ver', version: '1' })
@Idempotent({ scope: 'global' })
class VersionedController {
  @Post()
  take(@IdemContext() idem?: IdempotencyContext) {
    return reached('ver.take', idem);
  }
}

@Controller('items')
@Idempotent({ scope: 'global' })
class ItemsController {
  @Patch(':id')
  patch(@IdemContext() idem?: IdempotencyContext) {
    return reached('items.patch', idem);
  }
}

// Registered first: a non-idempotent route before an idempotent wildcard of the same prefix.
@Controller('files')
class FilesPlainController {
  @Post('plain/:id')
  plain(@IdemContext() idem?: IdempotencyContext) {
    return reached('files.plain', idem);
  }
}

@Controller('files')
@Idempotent({ scope: 'global' })
class FilesController {
  @Post('*')
  upload(@IdemContext() idem?: IdempotencyContext) {
    return reached('files.upload', idem);
  }
}

// An idempotent route before a non-idempotent wildcard that also matches its path.
@Controller('docs')
class DocsController {
  @Post('special')
  @Idempotent({ scope: 'global' })
  special(@IdemContext() idem?: IdempotencyContext) {
    return reached('docs.special', idem);
  }

  @Post('*')
  any(@IdemContext() idem?: IdempotencyContext) {
    return reached('docs.any', idem);
  }
}

@Controller('rawfirst')
@Idempotent({ scope: 'global' })
class RawFirstController {
  @Post()
  take(@IdemContext() idem?: IdempotencyContext) {
    return reached('rawfirst.take', idem);
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [
    MultiController,
    OptionalKeyController,
    HostedController,
    VersionedController,
    ItemsController,
    FilesPlainController,
    FilesController,
    DocsController,
    RawFirstController,
  ],
})
class RoutingModule {}

const routingSetup = (app: INestApplication) => {
  app.setGlobalPrefix('api');
  app.enableVersioning({ type: VersioningType.HEADER, header: 'x-api-version' });
  // The app's own Express route, registered after the JSON parser (the app's, as Nest's
  // default) and before Nest's routes (which init() adds), on the path of an idempotent Nest
  // route: it serves the requests.
  if (app.getHttpAdapter().getType() === 'express') {
    (app as NestExpressApplication).useBodyParser('json');
    (
      app.getHttpAdapter().getInstance() as {
        post(
          path: string,
          handler: (req: unknown, res: { json(body: unknown): void }) => void,
        ): void;
      }
    ).post('/api/rawfirst', (_req, res) => res.json({ route: 'raw', keyed: false }));
  }
};

interface Row {
  name: string;
  method?: string;
  path: string;
  headers?: Record<string, string>;
  keyed?: boolean;
  /** Platforms where the row is a finding still open (`it.fails`). */
  fails?: readonly Platform[];
  /** The one platform the row is for. */
  only?: Platform;
}

const ROWS: readonly Row[] = [
  { name: 'POST to an idempotent route', path: '/api/multi' },
  { name: 'POST with a query string', path: '/api/multi?x=1' },
  { name: 'POST without a key', path: '/api/multi', keyed: false },
  {
    name: 'PATCH to a route on the same path that is not idempotent',
    method: 'PATCH',
    path: '/api/multi',
  },
  {
    name: 'PUT to an idempotent route whose method needs no key',
    method: 'PUT',
    path: '/api/multi',
  },
  {
    name: 'DELETE to a route that lists DELETE among its methods',
    method: 'DELETE',
    path: '/api/multi',
  },
  { name: 'OPTIONS to an idempotent route (needs no key)', method: 'OPTIONS', path: '/api/multi' },
  { name: 'POST with an optional key, given', path: '/api/opt' },
  { name: 'POST with an optional key, absent', path: '/api/opt', keyed: false },
  { name: 'the path in upper case', path: '/API/MULTI' },
  { name: 'a trailing slash', path: '/api/multi/' },
  { name: 'a doubled leading slash', path: '//api/multi' },
  { name: 'a percent-escaped letter', path: '/api/%6Dulti' },
  { name: 'no global prefix', path: '/multi' },
  {
    name: 'the host a controller is bound to',
    path: '/api/hosted',
    headers: { host: 'api.rev23.test' },
  },
  // Finding, MEDIUM (both platforms), fixed: no route serves this host (the small body gets 404), yet idem's
  // problem was answered and the app's filter never saw the request.
  {
    name: 'another host than the controller is bound to (no route: 404)',
    path: '/api/hosted',
    headers: { host: 'other.rev23.test' },
  },
  {
    name: 'the version a controller serves (header)',
    path: '/api/ver',
    headers: { 'x-api-version': '1' },
  },
  // Finding, MEDIUM (Express), fixed: no route serves version 2 (404), yet idem's problem was answered.
  {
    name: 'a version no controller serves (no route: 404)',
    path: '/api/ver',
    headers: { 'x-api-version': '2' },
  },
  // Finding, MEDIUM (Express), fixed: the same without a version header.
  { name: 'no version header (no route: 404)', path: '/api/ver' },
  { name: 'a path parameter', method: 'PATCH', path: '/api/items/7' },
  // Finding, MEDIUM (Fastify), fixed: find-my-way matches an empty parameter, Nest's adapter then answers 404;
  // idem's problem was answered instead of the app's handling.
  {
    name: 'an empty path parameter (no route: 404)',
    method: 'PATCH',
    path: '/api/items/',
  },
  {
    name: 'a non-idempotent route registered before an idempotent wildcard',
    path: '/api/files/plain/1',
  },
  { name: 'an idempotent wildcard', path: '/api/files/a/b' },
  // Finding, LOW (Express), fixed: the idempotent route comes first and serves the request, but a later
  // non-idempotent wildcard also matches its path: the platform's 413 instead of idem's.
  {
    name: 'an idempotent route before a non-idempotent wildcard of the same path',
    path: '/api/docs/special',
  },
  { name: 'a non-idempotent wildcard', path: '/api/docs/other' },
  // Finding, MEDIUM (Express), fixed: the app's own Express route serves the path before the idempotent Nest
  // route of the same path; idem's problem was answered (the app's route ignored).
  {
    name: "the app's own Express route before an idempotent Nest route of the same path",
    path: '/api/rawfirst',
    only: 'express',
  },
];

/**
 * Sends the row's request with a small body, then with one the platform refuses: idem's problem
 * for the big one exactly when the small one ran a keyed idempotent route; else the platform's
 * 413 through the app's filter, once.
 */
async function expectAsTheSmallBodyRan(url: string, row: Row): Promise<void> {
  const options = (body: Buffer) => ({
    method: row.method ?? 'POST',
    body,
    headers: { 'content-type': 'application/json', ...row.headers },
    ...(row.keyed === false ? {} : { key: key() }),
  });
  // A path that would read as a URL of its own (`//host/...`) is sent as written.
  const path = row.path.startsWith('//') ? `${url}${row.path}` : row.path;
  const small = await send(url, path, options(smallBody));
  const keyedRun = small.status < 300 && (json(small) as { keyed?: unknown }).keyed === true;
  const saw = appSaw.length;
  const big = await send(url, path, options(bigBody));
  if (keyedRun) {
    expect(isProblem(big)).toBe(true);
    expect(appSaw.slice(saw)).toEqual([]);
  } else expectAppHandled(big, appSaw.slice(saw));
}

/** One test per row, on each platform, of an app of `module` (see {@link expectAsTheSmallBodyRan}). */
function rowsOn(
  title: string,
  module: new () => object,
  setup: ((app: INestApplication) => void) | undefined,
  rows: readonly Row[],
): void {
  for (const platform of PLATFORMS) {
    describe(`nestrev23: ${title} on ${platform}`, () => {
      const app = served(platform, module, setup);
      for (const row of rows) {
        if (row.only !== undefined && row.only !== platform) continue;
        const test = row.fails?.includes(platform) ? it.fails : it;
        test(`${row.name}: idem's problem exactly when the small body runs a keyed idempotent route`, () =>
          expectAsTheSmallBodyRan(app.url, row));
      }
    });
  }
}

rowsOn("which refused bodies get idem's 413", RoutingModule, routingSetup, ROWS);

// Media-type versioning with a default version: every route without a version of its own is
// filtered by version too.
@Controller('media')
@Idempotent({ scope: 'global' })
class MediaController {
  @Post()
  take(@IdemContext() idem?: IdempotencyContext) {
    return reached('media.take', idem);
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [MediaController],
})
class MediaModule {}

rowsOn(
  'media-type versioning with a default version',
  MediaModule,
  (app) =>
    app.enableVersioning({ type: VersioningType.MEDIA_TYPE, key: 'v=', defaultVersion: '1' }),
  [
    { name: 'the default version', path: '/media', headers: { accept: 'application/json;v=1' } },
    {
      name: 'another version (no route: 404)',
      path: '/media',
      headers: { accept: 'application/json;v=2' },
    },
    { name: 'no version (no route: 404)', path: '/media' },
  ],
);

// A host option with a parameter (subdomain tenancy).
@Controller({ path: 'tenant', host: ':tenant.rev23.test' })
@Idempotent({ scope: 'global' })
class TenantHostController {
  @Post()
  take(@IdemContext() idem?: IdempotencyContext) {
    return reached('tenant.take', idem);
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [TenantHostController],
})
class TenantHostModule {}

rowsOn('a host option with a parameter', TenantHostModule, undefined, [
  { name: "a tenant's host", path: '/tenant', headers: { host: 'acme.rev23.test' } },
  { name: 'another domain (no route: 404)', path: '/tenant', headers: { host: 'acme.other.test' } },
]);

// ---------------------------------------------------------------------------------------------
// Order of checks: the key is validated before the body is read.

for (const platform of PLATFORMS) {
  describe(`nestrev23: an invalid key with a refused body on ${platform}`, () => {
    const app = served(platform, RoutingModule, routingSetup);
    // Finding, MEDIUM (both platforms, wrong status), fixed: idem checks the key before it
    // reads the body (DESIGN: validate key -> ... -> body size), and answers a small body so
    // with 400 invalid-key; the same request with a body the platform refuses got 413
    // body-too-large.
    it('gets the invalid-key 400, as with a small body', async () => {
      for (const bad of ['k'.repeat(300), '', 'caf\u00e9']) {
        const options = (body: Buffer) => ({
          key: bad,
          body,
          headers: { 'content-type': 'application/json' },
        });
        const small = await send(app.url, '/api/multi', options(smallBody));
        expect(small.status).toBe(400);
        const big = await send(app.url, '/api/multi', options(bigBody));
        expect(big.status).toBe(400);
        expect(json(big)).toEqual(json(small));
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Errors that are not the body limit: unchanged, once, to the app's own handling.

for (const platform of PLATFORMS) {
  describe(`nestrev23: other parser errors on ${platform}`, () => {
    const app = served(platform, RoutingModule, routingSetup);
    it("a malformed JSON body to a keyed idempotent route reaches the app's filter once, as without idem", async () => {
      const saw = appSaw.length;
      const x = await send(app.url, '/api/multi', {
        key: key(),
        body: Buffer.from('{"broken": '),
        headers: { 'content-type': 'application/json' },
      });
      expect(x.status).toBe(400);
      expect(String(x.headers['content-type'])).not.toMatch(/problem/);
      expect(appSaw.slice(saw)).toEqual([400]);
    });
  });
}

describe('nestrev23: a Fastify instance given by the user, with its own hooks', () => {
  const onErrors: unknown[] = [];
  const routeErrors: unknown[] = [];
  const app: Served = { app: undefined as never, url: '', close: async () => {} };
  beforeAll(async () => {
    const instance = fastify();
    instance.addHook('onError', (_request, _reply, error, done) => {
      onErrors.push((error as { code?: unknown }).code);
      done();
    });
    // The user's own per-route error handler, on every route: notes the error, passes it on.
    instance.addHook('onRoute', (route) => {
      route.errorHandler = function userRouteErrors(error) {
        routeErrors.push((error as { code?: unknown }).code);
        throw error;
      };
    });
    Object.assign(
      app,
      await serve('fastify', RoutingModule, routingSetup, new FastifyAdapter(instance)),
    );
  });
  afterAll(() => app.close());

  it("a keyed refused body to an idempotent route gets idem's problem; the user's handlers see nothing", async () => {
    const saw = appSaw.length;
    const big = await send(app.url, '/api/multi', {
      key: key(),
      body: bigBody,
      headers: { 'content-type': 'application/json' },
    });
    expect(isProblem(big)).toBe(true);
    expect(appSaw.slice(saw)).toEqual([]);
  });

  it("every other error goes once to the user's route handler, once to onError, once to the app's filter", async () => {
    const saw = appSaw.length;
    const hooks = onErrors.length;
    const routes = routeErrors.length;
    const malformed = await send(app.url, '/api/multi', {
      key: key(),
      body: Buffer.from('{"broken": '),
      headers: { 'content-type': 'application/json' },
    });
    expect(malformed.status).toBe(400);
    const unkeyed = await send(app.url, '/api/multi', {
      body: bigBody,
      headers: { 'content-type': 'application/json' },
    });
    expect(unkeyed.status).toBe(413);
    expect(routeErrors.slice(routes)).toEqual([
      'FST_ERR_CTP_INVALID_JSON_BODY',
      'FST_ERR_CTP_BODY_TOO_LARGE',
    ]);
    expect(onErrors.slice(hooks)).toEqual([
      'FST_ERR_CTP_INVALID_JSON_BODY',
      'FST_ERR_CTP_BODY_TOO_LARGE',
    ]);
    expect(appSaw.slice(saw)).toEqual([400, 413]);
  });
});

// ---------------------------------------------------------------------------------------------
// Two apps in one process: what one app marks must not change another's routes.

@Controller('shared')
@Idempotent({ scope: 'global' })
class SharedIdempotentController {
  @Post()
  take(@IdemContext() idem?: IdempotencyContext) {
    return reached('shared.take', idem);
  }
}

// The same route method (inherited), exempted.
@Controller('exempt')
@Idempotent(false)
class ExemptSubController extends SharedIdempotentController {}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [SharedIdempotentController],
})
class IdempotentOnlyModule {}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [ExemptSubController],
})
class ExemptOnlyModule {}

for (const platform of PLATFORMS) {
  describe(`nestrev23: two apps in one process on ${platform}`, () => {
    const bigTo = (url: string, path: string) =>
      send(url, path, {
        key: key(),
        body: bigBody,
        headers: { 'content-type': 'application/json' },
      });

    // Finding, HIGH (isolation), fixed: the settings were left on the shared route method by the
    // first app and never replaced by the second, which has no idempotent controller using it:
    // the exempted route of the second app answered idem's problem (its small body runs without
    // a key). Each app's marks are now its own (a WeakMap by the module's service).
    it('an app closed before leaves nothing on a route another app exempts', async () => {
      const first = await serve(platform, IdempotentOnlyModule);
      try {
        expect(isProblem(await bigTo(first.url, '/shared'))).toBe(true);
      } finally {
        await first.close();
      }
      const second = await serve(platform, ExemptOnlyModule);
      try {
        const small = await send(second.url, '/exempt', {
          key: key(),
          body: smallBody,
          headers: { 'content-type': 'application/json' },
        });
        expect(json(small)).toEqual({ route: 'shared.take', keyed: false });
        const saw = appSaw.length;
        expectAppHandled(await bigTo(second.url, '/exempt'), appSaw.slice(saw));
      } finally {
        await second.close();
      }
    });

    // Finding, HIGH (isolation), fixed: two apps made before either starts (NestFactory.create,
    // then listen): the second's marks were what the first one's routes got.
    it('two apps created together keep their own routes apart', async () => {
      const make = (module: new () => object) =>
        platform === 'express'
          ? NestFactory.create<NestExpressApplication>(module, new ExpressAdapter(), {
              logger: false,
            })
          : NestFactory.create<NestFastifyApplication>(module, new FastifyAdapter(), {
              logger: false,
            });
      const exempt = await make(ExemptOnlyModule);
      const idempotent = await make(IdempotentOnlyModule);
      try {
        for (const one of [exempt, idempotent]) {
          one.useGlobalFilters(new AppFilter(one.get(HttpAdapterHost).httpAdapter));
          await one.listen(0, '127.0.0.1');
        }
        const urlOf = async (one: INestApplication) =>
          (await one.getUrl()).replace('[::1]', '127.0.0.1').replace('localhost', '127.0.0.1');
        expect(isProblem(await bigTo(await urlOf(idempotent), '/shared'))).toBe(true);
        const saw = appSaw.length;
        expectAppHandled(await bigTo(await urlOf(exempt), '/exempt'), appSaw.slice(saw));
      } finally {
        await exempt.close();
        await idempotent.close();
      }
    });

    it('an app created and closed again and again: the route methods carry one mark, the routes stay right', async () => {
      const method = SharedIdempotentController.prototype.take as object;
      const keys = () => Reflect.getMetadataKeys(method).length;
      let before: number | undefined;
      for (let i = 0; i < 6; i++) {
        const one = await serve(platform, i % 2 === 0 ? IdempotentOnlyModule : ExemptOnlyModule);
        try {
          if (i % 2 === 0) expect(isProblem(await bigTo(one.url, '/shared'))).toBe(true);
        } finally {
          await one.close();
        }
        if (i === 1) before = keys();
      }
      expect(keys()).toBe(before);
    });

    it('app.init() twice adds the body-limit handling once', async () => {
      const one = await serve(platform, IdempotentOnlyModule);
      try {
        await one.app.init();
        await one.app.init();
        if (platform === 'express') {
          const stack = (
            one.app.getHttpAdapter().getInstance() as {
              router: { stack: Array<{ name?: string }> };
            }
          ).router.stack;
          expect(stack.filter((layer) => layer.name === 'idempotencyBodyLimit')).toHaveLength(1);
        }
        expect(isProblem(await bigTo(one.url, '/shared'))).toBe(true);
      } finally {
        await one.close();
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// (b) The controller instances Nest calls routes on.

const SLOW_MS = 400;

@Controller({ path: 'scoped', scope: Scope.REQUEST })
@Idempotent({ scope: 'global' })
@UseInterceptors(TimeoutInterceptor)
class RequestScopedController {
  @Post()
  async take() {
    const n = ran('nestrev23-scoped');
    await sleep(SLOW_MS);
    return { n };
  }
}

@Controller('dynamic')
@Idempotent({ scope: 'global' })
@UseInterceptors(TimeoutInterceptor)
class DynamicModuleController {
  @Post()
  async take() {
    const n = ran('nestrev23-dynamic');
    await sleep(SLOW_MS);
    return { n };
  }
}

@Module({})
class FeatureModule {
  static register(): DynamicModule {
    return { module: FeatureModule, controllers: [DynamicModuleController] };
  }
}

@Module({
  imports: [
    IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} }),
    FeatureModule.register(),
  ],
  controllers: [RequestScopedController],
})
class InstancesModule {}

for (const platform of PLATFORMS) {
  describe(`nestrev23: controller instances on ${platform}`, () => {
    const app = served(platform, InstancesModule);

    for (const [path, name] of [
      ['/scoped', 'nestrev23-scoped'],
      ['/dynamic', 'nestrev23-dynamic'],
    ] as const) {
      it(`${path}: a retry while the timed-out first call still runs does not run it again`, async () => {
        const k = key();
        const before = count(name);
        const first = await send(app.url, path, { key: k, body: { a: 1 } });
        expect(first.status).toBe(408);
        const retry = await send(app.url, path, { key: k, body: { a: 1 } });
        expect(retry.status).toBe(409);
        expect(count(name)).toBe(before + 1);
        await sleep(SLOW_MS + 100);
      });
    }

    it('a request-scoped controller: no instance is kept per request (bounded)', async () => {
      const service = app.app.get(IdempotencyService);
      for (let i = 0; i < 20; i++) {
        const x = await send(app.url, '/scoped', { key: key(), body: { i } });
        expect(x.status).toBe(408);
      }
      expect(service.controllerInstances(RequestScopedController)).toBeUndefined();
      expect(service.controllerInstances(DynamicModuleController)?.size).toBe(1);
      await sleep(SLOW_MS + 100);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// The host options Nest compiles with path-to-regexp, as read here.

describe('nestrev23: host options read as path-to-regexp reads them', () => {
  const { pathToRegexp } = createRequire(import.meta.resolve('@nestjs/core'))('path-to-regexp') as {
    pathToRegexp(path: string): { regexp: RegExp };
  };
  it('admits exactly the host names path-to-regexp matches, for every option read here', () => {
    // A small deterministic generator: options of text and parameters, names of the same bits.
    let seed = 23;
    const next = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const bits = ['a', 'b', '.', '-', 'x.y', ':p', ':q', '\\:', 'ex.com'];
    const nameBits = ['a', 'b', '.', '-', 'x', 'y', 'ex', 'com', ':', '/', 'A'];
    let compared = 0;
    for (let i = 0; i < 400; i++) {
      let host = '';
      for (let j = 1 + next(5); j > 0; j--) host += bits[next(bits.length)];
      let real: RegExp | undefined;
      try {
        real = pathToRegexp(host).regexp;
      } catch {
        real = undefined;
      }
      const read = hostPattern(host);
      if (read === undefined) continue;
      expect(real, host).toBeDefined();
      for (let k = 0; k < 40; k++) {
        let name = '';
        for (let j = 1 + next(7); j > 0; j--) name += nameBits[next(nameBits.length)];
        expect([host, name, read.test(name)]).toEqual([host, name, (real as RegExp).test(name)]);
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(4000);
  });
});

// ---------------------------------------------------------------------------------------------
// A route conflict policy: Nest registers the routes it resolved later, by other code.

for (const platform of PLATFORMS) {
  describe(`nestrev23: a route conflict policy on ${platform}`, () => {
    const app: Served = { app: undefined as never, url: '', close: async () => {} };
    beforeAll(async () => {
      const nest =
        platform === 'express'
          ? await NestFactory.create<NestExpressApplication>(RoutingModule, new ExpressAdapter(), {
              logger: false,
              routeConflictPolicy: { duplicate: 'warn' },
            })
          : await NestFactory.create<NestFastifyApplication>(RoutingModule, new FastifyAdapter(), {
              logger: false,
              routeConflictPolicy: { duplicate: 'warn' },
            });
      nest.useGlobalFilters(new AppFilter(nest.get(HttpAdapterHost).httpAdapter));
      routingSetup(nest);
      await nest.listen(0, '127.0.0.1');
      const url = (await nest.getUrl())
        .replace('[::1]', '127.0.0.1')
        .replace('localhost', '127.0.0.1');
      Object.assign(app, { app: nest, url, close: () => nest.close() });
    });
    afterAll(() => app.close());

    // Finding, LOW (Fastify), fixed: with a conflict policy Nest registers the routes it
    // resolved first without naming their handlers, and its Fastify adapter wraps the handler of
    // a route with a parameter in a function without its metadata: the keyed refused body of
    // PATCH /api/items/7 got the platform's 413, not idem's. The wrapper now carries the marks.
    for (const row of [
      { name: 'a path parameter', method: 'PATCH', path: '/api/items/7' },
      { name: 'an empty path parameter (no route: 404)', method: 'PATCH', path: '/api/items/' },
      { name: 'POST to an idempotent route', path: '/api/multi' },
    ] as const)
      it(`${row.name}: idem's problem exactly when the small body runs a keyed idempotent route`, () =>
        expectAsTheSmallBodyRan(app.url, row));
  });
}

// ---------------------------------------------------------------------------------------------
// A value that is no Error, thrown by the app's own Fastify hook on an idempotent route.

describe('nestrev23: a non-Error thrown by a Fastify hook', () => {
  const app: Served = { app: undefined as never, url: '', close: async () => {} };
  beforeAll(async () => {
    const instance = fastify();
    instance.addHook('preHandler', async (request: { headers: Record<string, unknown> }) => {
      if (request.headers['x-throw'] === 'yes') throw 'not an error';
    });
    Object.assign(
      app,
      await serve('fastify', RoutingModule, routingSetup, new FastifyAdapter(instance)),
    );
  });
  afterAll(() => app.close());

  // Finding, LOW (Fastify), fixed: the route error handler handed a thrown non-Error on as a
  // rejected promise, which Fastify's wrap published once more on its `fastify.request.handler`
  // tracing channel (2 errors on an idempotent route, 1 elsewhere), as @idem/fastify did before
  // fastfix. Now handed on with Fastify's own error flag, as Fastify hands on what a hook threw.
  it('a tracing-channel subscriber sees as many handler errors on an idempotent route as on another', async () => {
    const counts = { error: 0, asyncStart: 0 };
    const counting = (event: keyof typeof counts) => () => {
      counts[event]++;
    };
    const ignored = () => {};
    const channel = diagnostics.tracingChannel('fastify.request.handler');
    const subscriber = {
      ...{ start: ignored, end: ignored, asyncEnd: ignored },
      ...{ asyncStart: counting('asyncStart'), error: counting('error') },
    };
    channel.subscribe(subscriber as never);
    try {
      const seen: (typeof counts)[] = [];
      for (const [method, path] of [
        ['POST', '/api/multi'],
        ['PATCH', '/api/multi'],
      ] as const) {
        counts.error = 0;
        counts.asyncStart = 0;
        const saw = appSaw.length;
        const x = await send(app.url, path, {
          method,
          key: key(),
          body: smallBody,
          headers: { 'content-type': 'application/json', 'x-throw': 'yes' },
        });
        expect(x.status).toBe(500);
        expect(appSaw.slice(saw)).toEqual(['other']);
        seen.push({ ...counts });
      }
      expect(seen[1]?.error).toBeGreaterThan(0);
      expect(seen[0]).toEqual(seen[1]);
    } finally {
      channel.unsubscribe(subscriber as never);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// A request-scoped controller's route method called on another object by a job of the request.

// Its pipe starts a worker (review-kit's), in the request's async context.
@Controller({ path: 'scoped-job', scope: Scope.REQUEST })
@UseInterceptors(TimeoutInterceptor)
class ScopedJobController {
  @Post()
  @Idempotent({ scope: 'global' })
  async take(@Body(LazyWorkerPipe) body?: { ms?: number }) {
    ran('nestrev23-scoped-job');
    await sleep(body?.ms ?? 300);
    ran('nestrev23-scoped-job-end');
    return { ok: true };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [ScopedJobController],
})
class ScopedJobModule {}

for (const platform of PLATFORMS) {
  describe(`nestrev23: a request-scoped controller's method called by a job on ${platform}`, () => {
    const app = served(platform, ScopedJobModule);
    const until = async (check: () => boolean, ms = 3000) => {
      for (let waited = 0; waited < ms && !check(); waited += 10) await sleep(10);
    };

    // Finding, LOW (both platforms), left: Nest makes a request-scoped controller's instance per
    // request, so `controllerInstances` knows none (undefined) and every object is taken for
    // Nest's: a job of request A (its worker started by A's pipe, so in A's async context)
    // calling the route's method on an object it made joins A's run, and A's key stays held
    // until the job ends (bounded by maxHoldMs; never freed early: exactly-once holds). As for
    // a singleton controller called on Nest's own instance (callrev14), the interceptor cannot
    // tell the calls apart without Nest's per-request instance, which only Nest's injector
    // internals hold. What the app can do: start such workers outside the request's context
    // and have jobs call a service rather than a controller's route method.
    it.fails('does not hold request A for its route method a job calls on another object', async () => {
      stopWorker();
      const k = key();
      const runs = count('nestrev23-scoped-job');
      const ended = count('nestrev23-scoped-job-end');
      const first = send(app.url, '/scoped-job', { key: k, body: {} });
      await sleep(60);
      let jobDone = false;
      const other = Object.create(ScopedJobController.prototype) as ScopedJobController;
      jobs.push(() => other.take({ ms: 1500 }).finally(() => (jobDone = true)));
      try {
        expect((await first).status).toBe(408);
        await until(() => count('nestrev23-scoped-job-end') > ended);
        await sleep(100);
        // A's own work ended and its 408 is not final: the retry runs.
        const retried = await send(app.url, '/scoped-job', { key: k, body: {} });
        expect(jobDone).toBe(false);
        expect(retried.status).toBe(408);
        expect(count('nestrev23-scoped-job')).toBe(runs + 3);
      } finally {
        await until(() => jobDone, 4000);
        await sleep(400);
      }
    });
  });
}
