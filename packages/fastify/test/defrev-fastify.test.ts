import { Readable } from 'node:stream';
import type { ScopeHint } from '@idem/http';
import { type ScenarioAppConfig, TENANT_HEADER } from '@idem/http-conformance';
import Fastify from 'fastify';
import { defrevSuite } from '../../http-conformance/test/defrev-kit.js';
import { idempotency } from '../src/index.js';

// The driver of fastify.test.ts: the plugin with the given options, scope from x-tenant.
async function start({ options, routes }: ScenarioAppConfig) {
  const app = Fastify();
  await app.register(idempotency, {
    ...options,
    scope: (request) =>
      ({ principal: request.headers[TENANT_HEADER] as string | undefined }) as ScopeHint,
  });
  app.addContentTypeParser(
    ['application/octet-stream', 'multipart/form-data'],
    { parseAs: 'buffer' },
    (_req, body, done) => done(null, body),
  );
  for (const [path, behaviour] of routes) {
    app.all(path, async (request, reply) => {
      const query = new URLSearchParams(request.url.split('?')[1] ?? '');
      const tenant = request.headers[TENANT_HEADER] as string | undefined;
      const result = await behaviour({ body: request.body, query, tenant });
      reply.code(result.status).headers(result.headers);
      return reply.send(
        result.body instanceof Uint8Array ? Buffer.from(result.body) : Readable.from(result.body),
      );
    });
  }
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return { url, close: () => app.close() };
}

defrevSuite({
  name: 'fastify',
  outageRows: 'representative',
  start,
  // FINDING (LOW): a POST with a key and a 2 MiB JSON body gets Fastify's own 413
  // (`application/json; charset=utf-8`, `{"statusCode":413,"code":"FST_ERR_CTP_BODY_TOO_LARGE",...}`), not the
  // `application/problem+json` `https://idem.dev/problems/body-too-large` that Express, Koa
  // and Hono answer for the same input: Fastify's default `bodyLimit` (1 MiB) equals idem's
  // `maxBodyBytes` and answers first. Documented in packages/fastify/README.md ("Fastify's
  // `bodyLimit` may answer first"), but the @idem/http README's status table promises the problem.
  // Kept open on purpose (2026-12-06): a route `onSend` hook that replaced Fastify's own 413
  // with the problem was built and reviewed, then taken out. Fastify runs no onSend hook chain
  // for a route without one, and adding it cost every first execution of an idempotent route
  // 5.5 µs of the server's CPU (56.0 → 61.5 µs a request, 10 %; 55.5 without the hook,
  // benchmarks/profile/http-ab.mjs) for a 413 that is a 413 either way. To get the problem,
  // set the route's or the parser's `bodyLimit` above `maxBodyBytes` (README).
  frameworkBodyLimitFirst: { finding: 'fastify bodyLimit' },
  // Registration is where the plugin's options are read.
  createWithoutScope: async (store) => {
    const app = Fastify();
    try {
      // biome-ignore lint/suspicious/noExplicitAny: deliberately missing the required scope
      await app.register(idempotency, { store } as any);
      await app.ready();
    } finally {
      await app.close();
    }
  },
  createWith: async (options) => {
    const app = Fastify();
    try {
      // biome-ignore lint/suspicious/noExplicitAny: deliberately bad options
      await app.register(idempotency, options as any);
      await app.ready();
    } finally {
      await app.close();
    }
  },
});
