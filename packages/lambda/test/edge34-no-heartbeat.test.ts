import type { IdempotencyStore } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { functionScope, makeIdempotent, makeSqsBatchHandler } from '../src/index.js';
import { fakeContext, sqsRecord } from './lambda-env.js';

/** `store` noting the lease every acquire asks for in `asked`. */
function asking(store: IdempotencyStore) {
  const asked: number[] = [];
  const wrapped: IdempotencyStore = {
    capabilities: store.capabilities,
    acquire: (input, call) => {
      asked.push(input.leaseMs);
      return store.acquire(input, call);
    },
    complete: (i, c) => store.complete(i, c),
    release: (i, c) => store.release(i, c),
    extend: (i, c) => store.extend(i, c),
    get: (k) => store.get(k),
  };
  return { store: wrapped, asked };
}

// FINDING (edge34, fixed): with `heartbeatMs: false` the lease was `leaseMs` (30 s by default)
// capped by the time left, so with more time left than the lease (a 60 s function, leaseMs
// 10 s) nothing renewed it: it passed while Lambda still ran the handler, and a retry took the
// key over and ran the handler beside it. The lease now covers the invocation's time left.
describe('lambda with heartbeatMs: false: the lease covers the time the invocation has left (edge34)', () => {
  it('makeIdempotent: the claim asks for the whole time left, not leaseMs, and the record stays held that long while the handler runs', async () => {
    const memory = createMemoryStore();
    const { store, asked } = asking(memory);
    let leaseUntil = 0;
    let readAt = 0;
    const handler = makeIdempotent(
      async (_event: { id: string }, _ctx: unknown, idem: { storageKey: string }) => {
        const record = await memory.get(idem.storageKey);
        readAt = performance.timeOrigin + performance.now(); // the memory store's clock
        leaseUntil = record?.leaseUntil ?? 0;
        return 'ok';
      },
      {
        store,
        scope: functionScope,
        key: (e: { id: string }) => e.id,
        leaseMs: 200,
        heartbeatMs: false,
      },
    );
    const context = fakeContext(5_000);
    await expect(handler({ id: 'k1' }, context)).resolves.toBe('ok');
    expect(asked).toHaveLength(1);
    expect(asked[0]).toBeGreaterThan(4_000);
    // Held at least until the invocation's deadline (read while the handler ran).
    expect(leaseUntil - readAt).toBeGreaterThan(4_000);
    await memory.close?.();
  });

  it('the batch handlers: each record claims the whole time left', async () => {
    const memory = createMemoryStore();
    const { store, asked } = asking(memory);
    const handler = makeSqsBatchHandler(async () => 'done', {
      store,
      leaseMs: 200,
      heartbeatMs: false,
    });
    const response = await handler(
      { Records: [sqsRecord('a'), sqsRecord('b')] },
      fakeContext(5_000),
    );
    expect(response).toEqual({ batchItemFailures: [] });
    expect(asked).toHaveLength(2);
    for (const lease of asked) expect(lease).toBeGreaterThan(4_000);
    await memory.close?.();
  });

  it('with heartbeats on, the lease stays leaseMs (renewed by them); without a clock, leaseMs as given', async () => {
    const memory = createMemoryStore();
    const { store, asked } = asking(memory);
    const on = makeIdempotent(async () => 'ok', {
      store,
      scope: functionScope,
      key: (e: { id: string }) => e.id,
      leaseMs: 200,
    });
    await on({ id: 'on' }, fakeContext(5_000));
    const off = makeIdempotent(async () => 'ok', {
      store,
      scope: functionScope,
      key: (e: { id: string }) => e.id,
      leaseMs: 200,
      heartbeatMs: false,
    });
    await off({ id: 'no-clock' }, { functionName: 'orders-fn' } as never);
    expect(asked).toEqual([200, 200]);
    await memory.close?.();
  });
});
