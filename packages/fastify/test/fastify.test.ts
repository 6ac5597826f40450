import { Readable } from 'node:stream';
import Fastify from 'fastify';
import { describeHttpScenarios, TENANT_HEADER } from '../../http/test/support/scenarios.js';
import { idempotency } from '../src/index.js';

describeHttpScenarios({
  name: 'fastify',
  async start({ options, routes }) {
    const app = Fastify();
    await app.register(idempotency, {
      ...options,
      scope: (request) => ({
        principal: (request.headers[TENANT_HEADER] as string | undefined) ?? null,
      }),
    });
    app.addContentTypeParser(
      'application/octet-stream',
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
