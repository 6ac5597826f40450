import { setTimeout as sleep } from 'node:timers/promises';
import { deriveStorageKey, type IdempotencyStore } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { makeSqsBatchHandler, type RecordReport } from '../src/index.js';
import { slowed } from './deadline-store.js';
import { fakeContext, sqsRecord } from './lambda-env.js';

const keyOf = (messageId: string) => deriveStorageKey(['lambda', 'orders-fn'], messageId);

/** `store` counting the acquires it was sent. */
function counted(store: IdempotencyStore) {
  const calls = { acquires: 0 };
  const wrapped: IdempotencyStore = {
    capabilities: store.capabilities,
    acquire: (input, call) => {
      calls.acquires += 1;
      return store.acquire(input, call);
    },
    complete: (input, call) => store.complete(input, call),
    release: (input, call) => store.release(input, call),
    extend: (input, call) => store.extend(input, call),
    get: (key) => store.get(key),
  };
  return { store: wrapped, calls };
}

describe("batch claims bounded by the batch's deadline (edge34)", () => {
  // FINDING (edge34, fixed): the batch handlers built each record's engine with store calls
  // left to storeTimeoutMs (5 s), however little of the invocation was left: a claim sent just
  // before the batch's deadline went on past it (past the answer, into a frozen environment or
  // a later invocation) and landed there, a claim on a record already reported for redelivery.
  it('a claim still in flight at the deadline is given up there (its signal aborted before the service applies it): the record is reported, nothing stays claimed, its handler never runs', async () => {
    const memory = createMemoryStore();
    const seen: boolean[] = [];
    const runs: string[] = [];
    const reports: RecordReport<unknown>[] = [];
    const handler = makeSqsBatchHandler(
      async (record: { messageId: string }) => {
        runs.push(record.messageId);
      },
      {
        store: slowed(memory, 'acquire', 300, seen),
        onRecord: (r) => reports.push(r as RecordReport<unknown>),
      },
    );
    const records = [sqsRecord('a'), sqsRecord('b'), sqsRecord('c')];
    // 1 s left, margin 500 ms: the deadline is at 500 ms. The first claim lands at 300 ms; the
    // second, sent then, would land at 600 ms.
    const response = await handler({ Records: records }, fakeContext(1_000));
    const ids = records.map((r) => r.messageId);
    expect(response.batchItemFailures).toEqual([
      { itemIdentifier: ids[1] },
      { itemIdentifier: ids[2] },
    ]);
    await sleep(250); // the second claim's service call (300 ms from its send) has run
    expect(seen).toEqual([false, true]);
    expect(runs).toEqual([ids[0]]);
    expect((await memory.get(keyOf(ids[1] as string)))?.status).toBeUndefined();
    expect(reports.map((r) => r.status)).toEqual(['processed', 'timed_out', 'not_attempted']);
    await memory.close?.();
  });

  it('with too little time left to claim a key (under MIN_STORE_CALL_MS before the deadline) no claim is sent: every record is reported not_attempted and delivered again', async () => {
    const memory = createMemoryStore();
    const { store, calls } = counted(memory);
    let runs = 0;
    const reports: string[] = [];
    const handler = makeSqsBatchHandler(async () => ++runs, {
      store,
      onRecord: (r) => reports.push(r.status),
    });
    const records = [sqsRecord('a'), sqsRecord('b')];
    // 16 ms left: half of it kept in hand, 8 ms to claim in.
    const response = await handler({ Records: records }, fakeContext(16));
    expect(calls.acquires).toBe(0);
    expect(runs).toBe(0);
    expect(response.batchItemFailures.map((f) => f.itemIdentifier)).toEqual(
      records.map((r) => r.messageId),
    );
    expect(reports).toEqual(['not_attempted', 'not_attempted']);
    await memory.close?.();
  });

  it('with time enough, records are claimed and run as before (a context with 3 s left)', async () => {
    const memory = createMemoryStore();
    let runs = 0;
    const handler = makeSqsBatchHandler(async () => ++runs, { store: memory });
    const records = [sqsRecord('a'), sqsRecord('b')];
    expect(await handler({ Records: records }, fakeContext(3_000))).toEqual({
      batchItemFailures: [],
    });
    expect(await handler({ Records: records }, fakeContext(3_000))).toEqual({
      batchItemFailures: [],
    });
    expect(runs).toBe(2);
    await memory.close?.();
  });
});
