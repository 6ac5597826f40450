// @idem/hono on @hono/node-server: upstream code puts a Transfer-Encoding that is not Node's
// own chunked (`gzip`, `gzip, chunked`) on the Node response itself (`c.env.outgoing`). A
// replay is framed by its own body and a request pipelined behind it on the kept-alive
// connection is answered (framing2). A keyed HEAD (methods with GET and HEAD; Hono answers it
// with its GET route): no body bytes, the pipelined request read after its head.
import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import {
  describeHeadReplay,
  describeUpstreamFraming,
  type FramingApp,
  framingAppOptions,
  listening,
} from '@idem/http-conformance';
import { Hono } from 'hono';
import { idempotency, stream } from '../src/index.js';

async function start(head = false): Promise<FramingApp> {
  let runs = 0;
  const app = new Hono();
  app.use(async (c, next) => {
    const coding = c.req.header('x-framing');
    const outgoing = (c.env as { outgoing: { setHeader(name: string, value: string): void } })
      .outgoing;
    if (coding !== undefined) outgoing.setHeader('Transfer-Encoding', coding);
    await next();
  });
  app.use(idempotency(framingAppOptions(head)));
  app.post('/stream', (c) => {
    runs++;
    c.header('content-type', 'text/plain');
    return stream(c, async (s) => {
      for (const chunk of ['alpha-', 'beta-', 'gamma']) {
        await s.write(chunk);
        await s.sleep(5);
      }
    });
  });
  app.post('/whole', (c) => {
    runs++;
    return c.text('whole-body');
  });
  app.get('/doc', (c) => {
    runs++;
    // With a status: Hono's HEAD wrapper (`new Response(null, response)`) throws on
    // @hono/node-server for the response of a bare `c.text(text)` (hono 4.13.19, node-server
    // 1.19.19: a 500, idempotency() or not).
    return c.text('document-body', 200);
  });
  app.get('/ping', (c) => c.text('pong'));
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server;
  return { ...(await listening(server)), runs: () => runs };
}

describeUpstreamFraming('Hono on @hono/node-server', () => start());
describeHeadReplay('Hono on @hono/node-server', () => start(true));
