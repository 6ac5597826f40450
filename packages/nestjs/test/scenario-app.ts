import 'reflect-metadata';
import type { ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import type { ConformanceAdapterOptions, Reply, ScenarioAppConfig } from '@idem/http-conformance';
import { TENANT_HEADER } from '@idem/http-conformance';
import {
  All,
  type CanActivate,
  Controller,
  type ExecutionContext,
  type INestApplication,
  Injectable,
  Module,
  Req,
  Res,
  StreamableFile,
  UseGuards,
} from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ExpressAdapter, type NestExpressApplication } from '@nestjs/platform-express';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { IdempotencyModule, Idempotent, type NestIdempotencyOptions } from '../src/index.js';

export type Platform = 'express' | 'fastify';

/** The authentication of the test apps: the `x-tenant` header, when present, is the user. */
@Injectable()
export class TenantGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context
      .switchToHttp()
      .getRequest<{ headers: Record<string, unknown>; user?: unknown }>();
    const tenant = request.headers[TENANT_HEADER];
    if (typeof tenant === 'string' && tenant !== '')
      request.user = { id: tenant, issuedAt: Date.now() };
    return true;
  }
}

interface PlatformReply {
  status(code: number): unknown;
  header?(name: string, value: string): unknown;
  setHeader?(name: string, value: string): unknown;
}

/** Writes a behaviour's reply the Nest way: status and headers on the response, the body as a StreamableFile. */
export function streamable(res: PlatformReply, reply: Reply): StreamableFile {
  res.status(reply.status);
  for (const [name, value] of Object.entries(reply.headers)) {
    if (res.setHeader) res.setHeader(name, value);
    else res.header?.(name, value);
  }
  // A stream that fails midway destroys the response (Nest's default for a started body).
  return reply.body instanceof Uint8Array
    ? new StreamableFile(Buffer.from(reply.body))
    : new StreamableFile(Readable.from(reply.body));
}

/** A controller serving `routes` (every method, exactly at each path), marked `@Idempotent()`. */
function scenarioController(routes: ScenarioAppConfig['routes']): new () => object {
  @Controller()
  @UseGuards(TenantGuard)
  @Idempotent()
  class ScenarioController {}
  const proto = ScenarioController.prototype as Record<string, unknown>;
  let index = 0;
  for (const [path, behaviour] of routes) {
    const name = `route${index++}`;
    proto[name] = async (
      req: { url: string; body?: unknown; headers: Record<string, unknown> },
      res: PlatformReply,
    ) => {
      const tenant = req.headers[TENANT_HEADER];
      const reply = await behaviour({
        body: req.body,
        query: new URLSearchParams(req.url.split('?')[1] ?? ''),
        tenant: typeof tenant === 'string' ? tenant : undefined,
      });
      return streamable(res, reply);
    };
    const descriptor = Object.getOwnPropertyDescriptor(proto, name) as PropertyDescriptor;
    All(path)(proto, name, descriptor);
    Req()(proto, name, 0);
    Res({ passthrough: true })(proto, name, 1);
  }
  return ScenarioController;
}

/** Starts a Nest application of `platform` on loopback with `modules` and the app's controllers. */
export async function startNest(
  platform: Platform,
  root: new () => object,
  configure?: (app: INestApplication) => void,
): Promise<{ app: INestApplication; url: string; close(): Promise<void> }> {
  let app: INestApplication;
  if (platform === 'express') {
    const express = await NestFactory.create<NestExpressApplication>(root, new ExpressAdapter(), {
      logger: false,
      // A bad option rejects here instead of aborting the test process.
      abortOnError: false,
    });
    express.useBodyParser('raw', { type: 'application/octet-stream' });
    app = express;
  } else {
    const fastify = await NestFactory.create<NestFastifyApplication>(root, new FastifyAdapter(), {
      logger: false,
      // A bad option rejects here instead of aborting the test process.
      abortOnError: false,
    });
    fastify
      .getHttpAdapter()
      .getInstance()
      .addContentTypeParser(
        ['application/octet-stream', 'multipart/form-data'],
        { parseAs: 'buffer' },
        (_req, body, done) => done(null, body),
      );
    app = fastify;
  }
  configure?.(app);
  await app.listen(0, '127.0.0.1');
  const { port } = app.getHttpServer().address() as AddressInfo;
  return { app, url: `http://127.0.0.1:${port}`, close: () => app.close() };
}

/** The conformance driver: a Nest app of `platform` whose routes are all `@Idempotent()`, the principal from the guard. */
export function nestDriver(platform: Platform) {
  return {
    async start({ options, routes }: ScenarioAppConfig) {
      const moduleOptions: NestIdempotencyOptions = {
        ...(options as ConformanceAdapterOptions & NestIdempotencyOptions),
        // A scenario's app closes at its end, with the store down in some of them.
        shutdownDrainMs: 0,
      };
      @Module({
        imports: [IdempotencyModule.forRoot(moduleOptions)],
        controllers: [scenarioController(routes)],
      })
      class ScenarioModule {}
      const { url, close } = await startNest(platform, ScenarioModule);
      return { url, close };
    },
  };
}

/** A request timeout mounted before Nest's router: answers 503 after 100 ms if nothing did. */
export function outerTimeout(platform: Platform) {
  return (app: NestExpressApplication | NestFastifyApplication) => {
    if (platform === 'express') {
      (app as NestExpressApplication).use(
        (
          _req: unknown,
          res: ServerResponse & { status(code: number): ServerResponse },
          next: () => void,
        ) => {
          const timer = setTimeout(() => {
            if (!res.headersSent) res.status(503).end('timed out');
          }, 100);
          res.once('close', () => clearTimeout(timer));
          next();
        },
      );
    } else {
      const fastify = (app as NestFastifyApplication).getHttpAdapter().getInstance();
      fastify.addHook('onRequest', (_request, reply, done) => {
        const timer = setTimeout(() => {
          if (!reply.sent) void reply.code(503).send('timed out');
        }, 100);
        reply.raw.once('close', () => clearTimeout(timer));
        done();
      });
    }
  };
}
