import { Readable } from 'node:stream';
import type { ScopeHint } from '@idem/http';
import { listening, type ScenarioAppConfig, TENANT_HEADER } from '@idem/http-conformance';
import { bodyParser } from '@koa/bodyparser';
import Router from '@koa/router';
import Koa from 'koa';
import { defrevSuite } from '../../http-conformance/test/defrev-kit.js';
import { idempotency } from '../src/index.js';

async function bytesOf(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

// The driver of koa.test.ts: the middleware with the given options, scope from x-tenant.
async function start({ options, routes }: ScenarioAppConfig) {
  const app = new Koa();
  app.silent = true;
  app.use(
    idempotency({
      ...options,
      scope: (ctx) => ({ principal: ctx.get(TENANT_HEADER) || undefined }) as ScopeHint,
    }),
  );
  app.use(bodyParser());
  const router = new Router();
  for (const [path, behaviour] of routes) {
    router.all(path, async (ctx) => {
      const raw = ctx.is('application/octet-stream') ? await bytesOf(ctx.req) : undefined;
      const reply = await behaviour({
        body: raw?.length ? raw : ctx.request.body,
        query: new URLSearchParams(ctx.querystring),
        tenant: ctx.get(TENANT_HEADER) || undefined,
      });
      ctx.status = reply.status;
      ctx.set(reply.headers);
      ctx.body =
        reply.body instanceof Uint8Array ? Buffer.from(reply.body) : Readable.from(reply.body);
    });
  }
  app.use(router.routes());
  return listening(app.listen(0, '127.0.0.1'));
}

defrevSuite({
  name: 'koa',
  outageRows: 'representative',
  start,
  // biome-ignore lint/suspicious/noExplicitAny: deliberately missing the required scope
  createWithoutScope: (store) => idempotency({ store } as any),
  // biome-ignore lint/suspicious/noExplicitAny: deliberately bad options
  createWith: (options) => idempotency(options as any),
});
