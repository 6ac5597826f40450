import { Readable } from 'node:stream';
import type { ScopeHint } from '@idem/http';
import {
  describeHttpConformance,
  listening,
  memoryStores,
  redisStores,
  TENANT_HEADER,
} from '@idem/http-conformance';
import { bodyParser } from '@koa/bodyparser';
import Router from '@koa/router';
import Koa from 'koa';
import { idempotency } from '../src/index.js';

async function bytesOf(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

describeHttpConformance('koa', {
  stores: [memoryStores(), redisStores()],
  async start({ options, routes }) {
    const app = new Koa();
    // Koa logs every error it answers 500 for; the suite throws on purpose.
    app.silent = true;
    app.use(
      idempotency({
        ...options,
        // Undefined without the header: the suite checks the 500 no-principal answer.
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
        // A stream that throws: Koa destroys the response (the stream's 'error').
        ctx.body =
          reply.body instanceof Uint8Array ? Buffer.from(reply.body) : Readable.from(reply.body);
      });
    }
    app.use(router.routes());
    return listening(app.listen(0, '127.0.0.1'));
  },
});
