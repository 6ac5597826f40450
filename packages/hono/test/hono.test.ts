import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import type { ScopeHint } from '@idem/http';
import {
  describeHttpConformance,
  listening,
  memoryStores,
  redisStores,
  replyToResponse,
  TENANT_HEADER,
} from '@idem/http-conformance';
import { Hono } from 'hono';
import { idempotency } from '../src/index.js';

describeHttpConformance('hono', {
  stores: [memoryStores(), redisStores()],
  async start({ options, routes }) {
    const app = new Hono();
    app.onError((_error, c) => c.json({ error: 'internal' }, 500));
    app.use(
      idempotency({
        ...options,
        // Undefined without the header: the suite checks the 500 no-principal answer.
        scope: (c) => ({ principal: c.req.header(TENANT_HEADER) }) as ScopeHint,
      }),
    );
    for (const [path, behaviour] of routes) {
      app.all(path, async (c) => {
        const isJson = c.req.header('content-type')?.includes('json');
        const bytes =
          c.req.method === 'GET' ? new Uint8Array() : new Uint8Array(await c.req.arrayBuffer());
        const body =
          bytes.length === 0
            ? undefined
            : isJson
              ? JSON.parse(new TextDecoder().decode(bytes))
              : bytes;
        const reply = await behaviour({
          body,
          query: new URL(c.req.url).searchParams,
          tenant: c.req.header(TENANT_HEADER),
        });
        return replyToResponse(reply);
      });
    }
    return listening(serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }) as Server);
  },
});
