import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import type { ScopeHint } from '@idem/http';
import {
  listening,
  replyToResponse,
  type ScenarioAppConfig,
  TENANT_HEADER,
} from '@idem/http-conformance';
import { Hono } from 'hono';
import { defrevSuite } from '../../http-conformance/test/defrev-kit.js';
import { idempotency } from '../src/index.js';

// The driver of hono.test.ts: the middleware with the given options, scope from x-tenant.
async function start({ options, routes }: ScenarioAppConfig) {
  const app = new Hono();
  app.onError((_error, c) => c.json({ error: 'internal' }, 500));
  app.use(
    idempotency({
      ...options,
      scope: (c) => ({ principal: c.req.header(TENANT_HEADER) }) as ScopeHint,
    }),
  );
  for (const [path, behaviour] of routes) {
    app.all(path, async (c) => {
      const isJson = c.req.header('content-type')?.includes('json');
      const bytes =
        c.req.method === 'GET' || c.req.method === 'HEAD'
          ? new Uint8Array()
          : new Uint8Array(await c.req.arrayBuffer());
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
}

defrevSuite({
  name: 'hono',
  outageRows: 'all',
  start,
  // Fixed (was FINDING LOW, statusBeforeStored): when the final write fails (Redis frozen with
  // SIGSTOP while a 1.5 s handler runs), the first caller on Hono got `201` and its headers, then
  // an empty or cut body. The middleware now drops the connection before node-server sends a
  // head (`answerMustAbort`), so the caller sees 'socket hang up', as on the other adapters.
  // biome-ignore lint/suspicious/noExplicitAny: deliberately missing the required scope
  createWithoutScope: (store) => idempotency({ store } as any),
  // biome-ignore lint/suspicious/noExplicitAny: deliberately bad options
  createWith: (options) => idempotency(options as any),
});
