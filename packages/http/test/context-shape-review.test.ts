import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { withIdempotency } from '../src/index.js';

// The handler context's signal is read lazily since bddb023. Code that copies the context
// (a spread into a log record or a service call, as with res.locals.idempotency) must still
// get the signal, as it did when the context was a plain object.
describe('the handler context (review)', () => {
  it('a copy of the context keeps its signal and originId; its own members are the four of before and originId', async () => {
    const fetchLike = withIdempotency(
      async (_request, context) => {
        const copy = { ...context };
        return Response.json({
          keys: Object.keys(context ?? {}).sort(),
          copied: copy.signal instanceof AbortSignal,
          same: copy.signal === context?.signal,
          originId:
            copy.originId === context?.originId && /^[0-9a-f]{32}$/.test(copy.originId ?? ''),
        });
      },
      { store: createMemoryStore(), scope: 'global' },
    );
    const response = await fetchLike(
      new Request('http://localhost/orders', {
        method: 'POST',
        headers: { 'idempotency-key': 'k1' },
      }),
    );
    expect(await response.json()).toEqual({
      keys: ['fence', 'key', 'originId', 'signal', 'storageKey'],
      copied: true,
      same: true,
      originId: true,
    });
  });
});
