import { setTimeout as sleep } from 'node:timers/promises';
import { deriveStorageKey, type IdempotencyStore } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { makeSqsBatchHandler, type RecordReport } from '../src/index.js';
import { fakeContext, sqsRecord } from './lambda-env.js';

const keyOf = (messageId: string) => deriveStorageKey(['lambda', 'orders-fn'], messageId);

/** `store` whose acquires are applied `delayMs` after their send, whatever their signal says. */
function appliedLate(store: IdempotencyStore, delayMs: number): IdempotencyStore {
  return {
    capabilities: store.capabilities,
    acquire: async (input) => {
      await sleep(delayMs);
      return store.acquire(input);
    },
    complete: (i, c) => store.complete(i, c),
    release: (i, c) => store.release(i, c),
    extend: (i, c) => store.extend(i, c),
    get: (k) => store.get(k),
  };
}

describe('a claim given up at the batch deadline that the store applies anyway (rev34e)', () => {
  it.each([{ heartbeatMs: undefined }, { heartbeatMs: false as const }])(
    'is given back, and the redelivered record runs exactly once (%o)',
    async ({ heartbeatMs }) => {
      const memory = createMemoryStore();
      const runs: string[] = [];
      const reports: string[] = [];
      const handler = makeSqsBatchHandler(
        async (record: { messageId: string }) => {
          runs.push(record.messageId);
        },
        {
          store: appliedLate(memory, 150),
          ...(heartbeatMs === undefined ? {} : { heartbeatMs }),
          timeoutMarginMs: 100,
          onRecord: (r: RecordReport<unknown>) => reports.push(r.status),
        },
      );
      const record = sqsRecord('a');
      // 200 ms left, margin 100: the deadline at 100 ms, the claim applied at 150 ms.
      const response = await handler({ Records: [record] }, fakeContext(200));
      expect(response.batchItemFailures).toEqual([{ itemIdentifier: record.messageId }]);
      expect(reports).toEqual(['timed_out']);
      // The phantom claim is given back (bounded wait: at most a few lease quarters).
      let status: string | undefined = 'in_progress';
      for (let i = 0; i < 40 && status === 'in_progress'; i++) {
        await sleep(25);
        status = (await memory.get(keyOf(record.messageId)))?.status;
      }
      expect(status).toBeUndefined();
      const again = makeSqsBatchHandler(
        async (r: { messageId: string }) => {
          runs.push(r.messageId);
        },
        { store: memory },
      );
      expect(await again({ Records: [record] }, fakeContext(3_000))).toEqual({
        batchItemFailures: [],
      });
      expect(runs).toEqual([record.messageId]);
      await memory.close?.();
    },
  );

  it('FIFO, with a duplicate message id: the abandoned claim and every later record (same group or not, the duplicate too) are sent back; the redelivery runs each message once', async () => {
    const memory = createMemoryStore();
    const runs: string[] = [];
    const reports: string[] = [];
    const a = sqsRecord('a', true);
    const b = { ...sqsRecord('b', true), messageId: a.messageId }; // a duplicate id
    const c = sqsRecord('c', true);
    c.attributes = { ...c.attributes, MessageGroupId: 'group-2' };
    const records = [a, b, c];
    const handler = makeSqsBatchHandler(
      async (record: { messageId: string; body: string }) => {
        runs.push(record.body);
      },
      {
        store: appliedLate(memory, 150),
        payload: false,
        timeoutMarginMs: 100,
        onRecord: (r: RecordReport<unknown>) => reports.push(r.status),
      },
    );
    const response = await handler({ Records: records }, fakeContext(200));
    expect(response.batchItemFailures).toEqual(
      records.map((r) => ({ itemIdentifier: r.messageId })),
    );
    expect(reports).toEqual(['timed_out', 'not_attempted', 'not_attempted']);
    expect(runs).toEqual([]);
    let status: string | undefined = 'in_progress';
    for (let i = 0; i < 40 && status === 'in_progress'; i++) {
      await sleep(25);
      status = (await memory.get(keyOf(a.messageId)))?.status;
    }
    expect(status).toBeUndefined();
    const again = makeSqsBatchHandler(
      async (record: { body: string }) => {
        runs.push(record.body);
      },
      { store: memory, payload: false },
    );
    expect(await again({ Records: records }, fakeContext(3_000))).toEqual({
      batchItemFailures: [],
    });
    // One run per message id: the duplicate replays the first.
    expect(runs).toEqual(['a', 'c']);
    await memory.close?.();
  });
});
