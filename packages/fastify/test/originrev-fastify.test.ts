/**
 * originrev (adversarial review of the origin guarantee): the README says
 * `request.idempotency` carries `originId`; see http-conformance's originrev-kit.
 */
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { describe, it } from 'vitest';
import {
  expectOneOriginIdPerRequest,
  originrevStatus,
} from '../../http-conformance/test/originrev-kit.js';
import { idempotency } from '../src/index.js';

describe('originrev: originId through @idem/fastify', () => {
  it('request.idempotency.originId is the same for the retry after a 503; another key another', async () => {
    const seen: string[] = [];
    const app = Fastify();
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: () => ({ principal: 'p' }),
    });
    app.post('/orders', async (request, reply) => {
      const originId = request.idempotency?.originId ?? 'none';
      seen.push(originId);
      return reply.code(originrevStatus(seen)).send({ originId });
    });
    try {
      await expectOneOriginIdPerRequest(async (key) => {
        const response = await app.inject({
          method: 'POST',
          url: '/orders',
          headers: { 'idempotency-key': key },
        });
        return {
          status: response.statusCode,
          replayed: response.headers['idempotent-replayed'] === 'true',
          body: response.json(),
        };
      }, seen);
    } finally {
      await app.close();
    }
  });
});
