/**
 * originrev (adversarial review of the origin guarantee): the README says the execution
 * context at `c.get('idempotency')` carries `originId`; see http-conformance's originrev-kit.
 */
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { describe, it } from 'vitest';
import {
  expectOneOriginIdPerRequest,
  originrevStatus,
} from '../../http-conformance/test/originrev-kit.js';
import { type IdempotencyVariables, idempotency } from '../src/index.js';

describe('originrev: originId through @idem/hono', () => {
  it('c.get("idempotency").originId is the same for the retry after a 503; another key another', async () => {
    const seen: string[] = [];
    const app = new Hono<{ Variables: IdempotencyVariables }>();
    app.use(idempotency({ store: createMemoryStore(), scope: () => ({ principal: 'p' }) }));
    app.post('/orders', (c) => {
      const originId = c.get('idempotency')?.originId ?? 'none';
      seen.push(originId);
      return c.json({ originId }, originrevStatus(seen) as 201);
    });
    await expectOneOriginIdPerRequest(async (key) => {
      const response = await app.request('/orders', {
        method: 'POST',
        headers: { 'idempotency-key': key },
      });
      return {
        status: response.status,
        replayed: response.headers.get('idempotent-replayed') === 'true',
        body: await response.json(),
      };
    }, seen);
  });
});
