import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ScopeHint } from '@idem/http';
import { listening, type ScenarioAppConfig, TENANT_HEADER } from '@idem/http-conformance';
import express from 'express';
import { defrevSuite } from '../../http-conformance/test/defrev-kit.js';
import { idempotency } from '../src/index.js';

// The driver of express.test.ts: the middleware with the given options, scope from x-tenant.
async function start({ options, routes }: ScenarioAppConfig) {
  const app = express();
  app.use(
    idempotency({
      ...options,
      scope: (req) => ({ principal: req.get(TENANT_HEADER) }) as ScopeHint,
    }),
  );
  app.use(express.json());
  app.use(express.raw({ type: 'application/octet-stream' }));
  for (const [path, behaviour] of routes) {
    app.all(path, async (req, res) => {
      const query = new URLSearchParams(req.originalUrl.split('?')[1] ?? '');
      const reply = await behaviour({ body: req.body, query, tenant: req.get(TENANT_HEADER) });
      res.status(reply.status).set(reply.headers);
      if (reply.body instanceof Uint8Array) {
        res.end(Buffer.from(reply.body));
        return;
      }
      await pipeline(Readable.from(reply.body), res).catch(() => {});
    });
  }
  return listening(app.listen(0, '127.0.0.1'));
}

defrevSuite({
  name: 'express',
  outageRows: 'all',
  start,
  // biome-ignore lint/suspicious/noExplicitAny: deliberately missing the required scope
  createWithoutScope: (store) => idempotency({ store } as any),
  // biome-ignore lint/suspicious/noExplicitAny: deliberately bad options
  createWith: (options) => idempotency(options as any),
});
