/**
 * originrev (adversarial review of the origin guarantee): the README says the execution
 * context at `res.locals.idempotency` (or `getIdempotency(res)`) carries `originId`; see
 * http-conformance's originrev-kit.
 */
import { listening, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { describe, it } from 'vitest';
import {
  expectOneOriginIdPerRequest,
  originrevAnswerOf,
  originrevStatus,
} from '../../http-conformance/test/originrev-kit.js';
import { getIdempotency, idempotency } from '../src/index.js';

describe('originrev: originId through @idem/express', () => {
  it('res.locals.idempotency.originId (and getIdempotency) is the same for the retry after a 503; another key another', async () => {
    const seen: string[] = [];
    const app = express();
    app.use(idempotency({ store: createMemoryStore(), scope: () => ({ principal: 'p' }) }));
    app.post('/orders', (_req, res) => {
      const originId: string = res.locals.idempotency?.originId ?? 'none';
      seen.push(getIdempotency(res)?.originId === originId ? originId : 'differs');
      res.status(originrevStatus(seen)).json({ originId });
    });
    const running = await listening(app.listen(0, '127.0.0.1'));
    try {
      await expectOneOriginIdPerRequest(
        async (key) =>
          originrevAnswerOf(await send(running.url, '/orders', { method: 'POST', key, body: {} })),
        seen,
      );
    } finally {
      await running.close();
    }
  });
});
