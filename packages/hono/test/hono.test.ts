import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { listening } from '../../http/test/support/client.js';
import { describeHttpScenarios, TENANT_HEADER } from '../../http/test/support/scenarios.js';
import { idempotency } from '../src/index.js';

function toStream(
  chunks: AsyncIterable<Uint8Array<ArrayBuffer>>,
): ReadableStream<Uint8Array<ArrayBuffer>> {
  const iterator = chunks[Symbol.asyncIterator]();
  return new ReadableStream({
    async pull(controller) {
      const next = await iterator.next();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
  });
}

describeHttpScenarios({
  name: 'hono',
  async start({ options, routes }) {
    const app = new Hono();
    app.onError((_error, c) => c.json({ error: 'internal' }, 500));
    app.use(
      idempotency({
        ...options,
        scope: (c) => ({ principal: c.req.header(TENANT_HEADER) ?? null }),
      }),
    );
    for (const [path, behaviour] of routes) {
      app.all(path, async (c) => {
        const text = c.req.method === 'GET' ? '' : await c.req.text();
        const body =
          c.req.header('content-type')?.includes('json') && text
            ? JSON.parse(text)
            : text || undefined;
        const reply = await behaviour({
          body,
          query: new URL(c.req.url).searchParams,
          tenant: c.req.header(TENANT_HEADER),
        });
        return new Response(reply.body instanceof Uint8Array ? reply.body : toStream(reply.body), {
          status: reply.status,
          headers: reply.headers,
        });
      });
    }
    return listening(serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }) as Server);
  },
});
