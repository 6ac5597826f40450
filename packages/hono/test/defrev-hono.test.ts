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
  // FINDING (LOW): when the final write fails (Redis frozen with SIGSTOP while a 1.5 s handler
  // runs), the first caller on Hono receives `201` and its headers when the handler returns,
  // then, ~6.6 s in, a truncated body (aborted after completionWaitMs). On @idem/express,
  // @idem/fastify, @idem/koa and @idem/nestjs (both platforms) the same caller gets no status
  // at all: 'socket hang up' at ~6.5 s. Nothing runs twice either way (the retry after the
  // thaw is the replay), but a Hono client that trusts the status line without reading the
  // body sees "201 Created" for a response idem treats as failed. Documented only in
  // general terms ("the end reaches the client only after the outcome is stored").
  // Suggested fix: state per adapter in the README what the caller sees when the outcome
  // cannot be stored, or have the Hono path hold the status of a small non-live response
  // until the completion (as the Node recorder does).
  statusBeforeStored: { finding: 'hono flushes the status line first' },
  // biome-ignore lint/suspicious/noExplicitAny: deliberately missing the required scope
  createWithoutScope: (store) => idempotency({ store } as any),
  // biome-ignore lint/suspicious/noExplicitAny: deliberately bad options
  createWith: (options) => idempotency(options as any),
});
