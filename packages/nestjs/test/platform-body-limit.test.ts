import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { PROBLEM_TYPES } from '@idem/http';
import { json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import {
  type ArgumentsHost,
  Catch,
  Controller,
  type ExceptionFilter,
  HttpException,
  Module,
  Param,
  Patch,
  Post,
  Put,
} from '@nestjs/common';
import {
  BaseExceptionFilter,
  HttpAdapterHost as HttpAdapterHostToken,
  NestFactory,
} from '@nestjs/core';
import { ExpressAdapter, type NestExpressApplication } from '@nestjs/platform-express';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyModule, Idempotent } from '../src/index.js';

// The platforms' body parsers refuse a body past their own limit (1 MiB on Fastify, 100 KB of
// JSON on Express: body-parser's default) before any interceptor runs. For a keyed request to an
// `@Idempotent()` route that needs its key, that refusal is answered with idem's
// body-too-large problem, as the interceptor answers a body past `maxBodyBytes` (the defrev
// finding `frameworkBodyLimitFirst`, fixed): on Fastify by the route's own error handler (set
// in an `onRoute` hook on idempotent routes; Fastify routes before it parses), on Express by an
// error middleware after the routes that looks the request's routes up in Express's router
// (Express parses before it routes). Every other request's refusal (no key, a route that is
// not idempotent or exempted, a method that needs no key) still goes to the app's own handling
// (Nest's exception layer, the app's global filters) with the platform's 413. Checked on both
// platforms, with the parser limits as they are and raised above `maxBodyBytes`.

let runs = 0;
@Controller('big')
class BigController {
  @Post()
  @Idempotent({ scope: 'global' })
  take() {
    runs++;
    return { run: runs };
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [BigController],
})
class AppModule {}

const FOUR_MIB = 4 * 1024 * 1024;
const body = (bytes: number) => Buffer.from(JSON.stringify({ pad: 'p'.repeat(bytes) }));
const TWO_MIB = 2 * 1024 * 1024;

/** Routes of every kind a refused body may be for. */
let items = 0;
@Controller('items')
@Idempotent({ scope: 'global' })
class ItemsController {
  // A path with a parameter (Fastify wraps Nest's handler of such a route).
  @Patch(':id')
  patch(@Param('id') id: string) {
    items++;
    return { id };
  }

  @Post(':id/exempt')
  @Idempotent(false)
  exempt() {
    items++;
    return { exempt: true };
  }

  // PUT needs no key by default (methods POST, PATCH).
  @Put(':id')
  put() {
    items++;
    return { put: true };
  }
}

@Controller('plain')
class PlainController {
  @Post()
  take() {
    items++;
    return { plain: true };
  }
}

/** The app's own global filter: counts the 413s that reach the app's handling. */
const appSaw: number[] = [];
@Catch()
class AppFilter extends BaseExceptionFilter implements ExceptionFilter {
  override catch(exception: unknown, host: ArgumentsHost) {
    if (exception instanceof HttpException) appSaw.push(exception.getStatus());
    super.catch(exception, host);
  }
}

@Module({
  imports: [IdempotencyModule.forRoot({ store: createMemoryStore(), onWarning: () => {} })],
  controllers: [BigController, ItemsController, PlainController],
})
class DefaultLimitModule {}

/**
 * Serves `module` on `platform`, with the JSON parser's limit raised to `limit` when given, and
 * the app's own global filter ({@link AppFilter}).
 */
async function serve(
  platform: 'express' | 'fastify',
  module: new () => object,
  limit?: number,
): Promise<{ url: string; close: () => Promise<void> }> {
  const app =
    platform === 'express'
      ? await NestFactory.create<NestExpressApplication>(module, new ExpressAdapter(), {
          logger: false,
        })
      : await NestFactory.create<NestFastifyApplication>(
          module,
          new FastifyAdapter(limit === undefined ? {} : { bodyLimit: limit }),
          { logger: false },
        );
  if (platform === 'express' && limit !== undefined)
    (app as NestExpressApplication).useBodyParser('json', { limit });
  app.useGlobalFilters(new AppFilter(app.get(HttpAdapterHostToken).httpAdapter));
  await app.listen(0, '127.0.0.1');
  const url = (await app.getUrl()).replace('[::1]', '127.0.0.1').replace('localhost', '127.0.0.1');
  return { url, close: () => app.close() };
}

/** The app {@link serve} makes, served for the tests of the `describe` this is called in. */
function served(platform: 'express' | 'fastify', module: new () => object, limit?: number) {
  const app = { url: '', close: async () => {} };
  beforeAll(async () => {
    Object.assign(app, await serve(platform, module, limit));
  });
  afterAll(() => app.close());
  return app;
}

describe.each(['express', 'fastify'] as const)(
  '@idem/nestjs on %s with the parser limit raised',
  (platform) => {
    const app = served(platform, AppModule, FOUR_MIB);

    it('a 2 MiB JSON body with a key gets the body-too-large problem; nothing runs', async () => {
      const before = runs;
      const x = await send(app.url, '/big', {
        key: `big-${randomUUID()}`,
        body: body(2 * 1024 * 1024),
        headers: { 'content-type': 'application/json' },
      });
      expect(x.status).toBe(413);
      expect(x.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(json(x)).toMatchObject({ type: PROBLEM_TYPES.bodyTooLarge, status: 413 });
      expect(runs).toBe(before);
    });

    it('a body within maxBodyBytes still runs', async () => {
      const x = await send(app.url, '/big', {
        key: `small-${randomUUID()}`,
        body: body(10),
        headers: { 'content-type': 'application/json' },
      });
      expect(x.status).toBe(201);
    });
  },
);

describe.each(['express', 'fastify'] as const)(
  '@idem/nestjs on %s with the parser limit as it is',
  (platform) => {
    const app = served(platform, DefaultLimitModule);

    const big = (path: string, options: { key?: string; method?: string; chunked?: boolean }) =>
      send(app.url, path, {
        method: options.method ?? 'POST',
        ...(options.key === undefined ? {} : { key: options.key }),
        body: body(TWO_MIB),
        headers: { 'content-type': 'application/json' },
        ...(options.chunked ? { chunked: true } : {}),
      });
    const expectProblem = (x: Awaited<ReturnType<typeof send>>) => {
      expect(x.status).toBe(413);
      expect(x.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(x.headers['cache-control']).toBe('no-store');
      expect(json(x)).toEqual({
        type: PROBLEM_TYPES.bodyTooLarge,
        title: 'Request body too large',
        status: 413,
        detail: 'The request body exceeds the configured limit',
      });
    };
    const expectPlatform = (x: Awaited<ReturnType<typeof send>>) => {
      expect(x.status).toBe(413);
      expect(x.headers['content-type']).toMatch(/^application\/json/);
      expect(json(x)).toMatchObject({ statusCode: 413 });
    };

    it("a keyed 2 MiB body to a route marked on its method gets the problem; nothing runs; the app's filter sees nothing", async () => {
      const before = runs;
      const saw = appSaw.length;
      expectProblem(await big('/big', { key: `big-${randomUUID()}` }));
      expectProblem(await big('/big', { key: `big-${randomUUID()}`, chunked: true }));
      expect(runs).toBe(before);
      expect(appSaw.length).toBe(saw);
    });

    it('a keyed 2 MiB body to a route with a parameter, marked on its class, gets the problem', async () => {
      const before = items;
      expectProblem(await big('/items/7', { method: 'PATCH', key: `item-${randomUUID()}` }));
      expect(items).toBe(before);
    });

    it("every other refused body gets the platform's 413 through the app's own handling", async () => {
      const before = items + runs;
      const saw = appSaw.length;
      // No key.
      expectPlatform(await big('/big', {}));
      // Not idempotent; exempted; a method that needs no key.
      expectPlatform(await big('/plain', { key: `plain-${randomUUID()}` }));
      expectPlatform(await big('/items/7/exempt', { key: `ex-${randomUUID()}` }));
      expectPlatform(await big('/items/7', { method: 'PUT', key: `put-${randomUUID()}` }));
      // No route.
      const none = await big('/nowhere', { key: `none-${randomUUID()}` });
      expect(none.headers['content-type']).not.toMatch(/problem/);
      expect(items + runs).toBe(before);
      expect(appSaw.slice(saw)).toEqual([413, 413, 413, 413, none.status]);
    });

    it('a body within the limits still runs on every route', async () => {
      const small = { body: body(10), headers: { 'content-type': 'application/json' } };
      expect((await send(app.url, '/big', { key: `s-${randomUUID()}`, ...small })).status).toBe(
        201,
      );
      const patched = await send(app.url, '/items/8', {
        method: 'PATCH',
        key: `s-${randomUUID()}`,
        ...small,
      });
      expect(patched.status).toBe(200);
      expect(json(patched)).toEqual({ id: '8' });
      expect((await send(app.url, '/plain', small)).status).toBe(201);
    });
  },
);
