import { Readable } from 'node:stream';
import type { ScopeHint } from '@idem/http';
import {
  describeHttpConformance,
  memoryStores,
  redisStores,
  TENANT_HEADER,
} from '@idem/http-conformance';
import Fastify from 'fastify';
import { idempotency } from '../src/index.js';

describeHttpConformance('fastify', {
  stores: [memoryStores(), redisStores()],
  async start({ options, routes }) {
    const app = Fastify();
    await app.register(idempotency, {
      ...options,
      // Undefined without the header: the suite checks the 500 no-principal answer.
      scope: (request) =>
        ({ principal: request.headers[TENANT_HEADER] as string | undefined }) as ScopeHint,
    });
    // Bytes for the types Fastify has no parser of (a multipart form as its bytes: see the README).
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
  },
});
