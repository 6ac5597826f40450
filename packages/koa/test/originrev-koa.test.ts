/**
 * originrev (adversarial review of the origin guarantee): the README says the execution
 * context at `ctx.state.idempotency` (or `getIdempotency(ctx)`) carries `originId`; see
 * http-conformance's originrev-kit.
 */
import { listening, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Koa from 'koa';
import { describe, it } from 'vitest';
import {
  expectOneOriginIdPerRequest,
  originrevAnswerOf,
  originrevStatus,
} from '../../http-conformance/test/originrev-kit.js';
import { getIdempotency, idempotency } from '../src/index.js';

describe('originrev: originId through @idem/koa', () => {
  it('ctx.state.idempotency.originId (and getIdempotency) is the same for the retry after a 503; another key another', async () => {
    const seen: string[] = [];
    const koa = new Koa();
    koa.silent = true;
    koa.use(idempotency({ store: createMemoryStore(), scope: () => ({ principal: 'p' }) }));
    koa.use(async (ctx) => {
      const originId: string = ctx.state.idempotency?.originId ?? 'none';
      seen.push(getIdempotency(ctx)?.originId === originId ? originId : 'differs');
      ctx.status = originrevStatus(seen);
      ctx.body = { originId };
    });
    const app = await listening(koa.listen(0, '127.0.0.1'));
    try {
      await expectOneOriginIdPerRequest(
        async (key) =>
          originrevAnswerOf(await send(app.url, '/orders', { method: 'POST', key, body: {} })),
        seen,
      );
    } finally {
      await app.close();
    }
  });
});
