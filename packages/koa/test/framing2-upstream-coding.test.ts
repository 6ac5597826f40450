// Koa: a middleware before idempotency() puts a Transfer-Encoding that is not Node's own
// chunked (`gzip`, `gzip, chunked`) on the Node response. The replay dropped it, and Node
// then framed a streamed replay by nothing: ended by the connection's close under a
// `Connection: keep-alive` head, the request pipelined behind it lost (framing2). A keyed
// HEAD (methods with GET and HEAD): no body bytes, the pipelined request read after its head.
import { PassThrough } from 'node:stream';
import {
  describeHeadReplay,
  describeUpstreamFraming,
  type FramingApp,
  framingAppOptions,
  listening,
} from '@idem/http-conformance';
import Koa from 'koa';
import { idempotency } from '../src/index.js';

async function start(head = false): Promise<FramingApp> {
  let runs = 0;
  const app = new Koa();
  app.use(async (ctx, next) => {
    const coding = ctx.get('x-framing');
    if (coding) ctx.res.setHeader('Transfer-Encoding', coding);
    await next();
  });
  app.use(idempotency(framingAppOptions(head)));
  app.use((ctx) => {
    ctx.type = 'text/plain';
    if (ctx.path === '/ping') {
      ctx.body = 'pong';
      return;
    }
    runs++;
    if (ctx.path === '/whole') ctx.body = 'whole-body';
    else if (ctx.path === '/doc') ctx.body = 'document-body';
    else {
      const body = new PassThrough();
      ctx.body = body;
      body.write('alpha-');
      setTimeout(() => {
        body.write('beta-');
        setTimeout(() => body.end('gamma'), 5);
      }, 5);
    }
  });
  return { ...(await listening(app.listen(0, '127.0.0.1'))), runs: () => runs };
}

describeUpstreamFraming('Koa', () => start());
describeHeadReplay('Koa', () => start(true));
