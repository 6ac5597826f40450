import { setTimeout as sleep } from 'node:timers/promises';
import { type IdempotencyStore, StoreUnavailableError } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { functionScope, idempotency } from '../src/index.js';
import { charging, event, slowed, storageKey } from './deadline-store.js';
import { fakeContext } from './lambda-env.js';
import { describeMiddy } from './middy-versions.js';

describe('lambda store calls bounded by the deadline (rev33e)', () => {
  it.each([
    [600, 1_200],
    [100, 1_600],
  ])(
    'a completion that would land before the deadline is not cut at the safety margin (handler %i ms, completion %i ms, 2.5 s left): the invocation succeeds and the record is completed in time',
    async (workMs, completeMs) => {
      const memory = createMemoryStore();
      // 2.5 s left, margin 1 s: calls bounded until 1.5 s. The handler works 0.6 s; the
      // completion takes 1.2 s and so lands at 1.8 s, 0.7 s before the deadline. Cut at 1.5 s
      // it never lands in time (its retry takes 1.2 s again, past the deadline): the
      // invocation fails though the handler succeeded, Lambda retries it, and once the lease
      // (capped at the deadline) passes the retry runs the handler a second time. Second case:
      // sent at 0.1 s, the 1.6 s completion lands at 1.7 s; core's own storeTimeoutMs must not
      // have been lowered to the 1.5 s left at the start for it either.
      const { handler, counts } = charging(slowed(memory, 'complete', completeMs, []), workMs);
      const context = fakeContext(2_500);
      const outcome = await handler(event, context).then(
        (value) => value,
        (error: unknown) => error,
      );
      const status = (await memory.get(storageKey))?.status;
      expect(context.getRemainingTimeInMillis()).toBeGreaterThan(0);
      expect(outcome).toBe('charged');
      expect(status).toBe('completed');
      expect(counts.runs).toBe(1);
      await sleep(1_500);
      await memory.close?.();
    },
  );

  it('a context whose clock throws: the handler never runs, the invocation fails', async () => {
    const memory = createMemoryStore();
    const { handler, counts } = charging(memory);
    const context = {
      ...fakeContext(5_000),
      getRemainingTimeInMillis: () => {
        throw new Error('no clock');
      },
    };
    await expect(handler(event, context)).rejects.toThrow();
    expect(counts.runs).toBe(0);
    expect(await memory.get(storageKey)).toBeUndefined();
    await memory.close?.();
  });

  it.each([
    ['NaN', Number.NaN],
    ['a huge number', 1e300],
  ])(
    'a context whose clock returns %s still runs the handler once and records it',
    async (_, left) => {
      const memory = createMemoryStore();
      const { handler, counts } = charging(memory);
      const context = { ...fakeContext(5_000), getRemainingTimeInMillis: () => left };
      await expect(handler(event, context)).resolves.toBe('charged');
      await expect(handler(event, context)).resolves.toBe('charged');
      expect(counts.runs).toBe(1);
      expect((await memory.get(storageKey))?.status).toBe('completed');
      await memory.close?.();
    },
  );

  it.each([
    ['negative', -5],
    ['-Infinity', Number.NEGATIVE_INFINITY],
    ['zero', 0],
  ])(
    'a context whose clock returns %s never runs the handler nor leaves a claim',
    async (_, left) => {
      const memory = createMemoryStore();
      const { handler, counts } = charging(memory);
      const context = { ...fakeContext(5_000), getRemainingTimeInMillis: () => left };
      const failure = await handler(event, context).then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(failure).toBeInstanceOf(Error);
      expect(counts.runs).toBe(0);
      await sleep(20);
      const record = await memory.get(storageKey);
      expect(record?.status === 'in_progress' && record.leaseUntil > Date.now() + 5).toBe(false);
      await memory.close?.();
    },
  );

  it('two concurrent invocations in one container on one store run the handler once', async () => {
    const memory = createMemoryStore();
    const { handler, counts } = charging(slowed(memory, 'acquire', 30, []), 100);
    const results = await Promise.allSettled([
      handler(event, fakeContext(3_000)),
      handler(event, fakeContext(20)),
      handler(event, fakeContext(3_000)),
    ]);
    expect(counts.runs).toBe(1);
    expect(results.filter((r) => r.status === 'fulfilled').length).toBeGreaterThanOrEqual(1);
    await memory.close?.();
  });

  it('an acquire cut at the margin that landed at the store is given back (no claim left for a dead owner)', async () => {
    const memory = createMemoryStore();
    // The acquire is applied at once but answered 600 ms late; the invocation has 1 s left
    // (margin 500 ms): the wrapper gives it up at 500 ms. It landed, so it must be given back.
    const late: IdempotencyStore = {
      ...memory,
      capabilities: memory.capabilities,
      acquire: async (input, call) => {
        const answer = await memory.acquire(input, call);
        await sleep(600);
        return answer;
      },
      complete: (i, c) => memory.complete(i, c),
      release: (i, c) => memory.release(i, c),
      extend: (i, c) => memory.extend(i, c),
      get: (k) => memory.get(k),
    };
    const { handler, counts } = charging(late);
    const failure = await handler(event, fakeContext(1_000)).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(StoreUnavailableError);
    expect((failure as StoreUnavailableError).unsent).toBe(false);
    expect(counts.runs).toBe(0);
    await sleep(300);
    expect((await memory.get(storageKey))?.status).not.toBe('in_progress');
    await memory.close?.();
  });
});

describeMiddy(
  'idempotency(): a completion is not cut at the safety margin (rev33e)',
  ({ middy }) => {
    it('a completion landing 0.7 s before the deadline is recorded and the response returned', async () => {
      const memory = createMemoryStore();
      const counts = { runs: 0 };
      const handler = middy(async () => {
        counts.runs += 1;
        await sleep(600);
        return 'charged';
      }).use(
        idempotency({
          scope: functionScope,
          store: slowed(memory, 'complete', 1_200, []),
          key: (e: typeof event) => e.orderId,
        }),
      );
      const outcome = await handler(event, fakeContext(2_500)).then(
        (value) => value,
        (error: unknown) => error,
      );
      expect(outcome).toBe('charged');
      expect((await memory.get(storageKey))?.status).toBe('completed');
      expect(counts.runs).toBe(1);
      await sleep(1_500);
      await memory.close?.();
    });
  },
);
