import { setTimeout as sleep } from 'node:timers/promises';
import type { IdempotencyStore } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { functionScope, makeIdempotent, makeSqsBatchHandler } from '../src/index.js';
import { fakeContext, sqsRecord, storeKinds, useEnv } from './lambda-env.js';

/**
 * `store` whose acquires are applied `delayMs` after their send, whatever their signal says;
 * `landed` holds each such acquire's answer (settled once the store applied it).
 */
function appliedLate(
  store: IdempotencyStore,
  delayMs: number,
  landed: Promise<unknown>[] = [],
): IdempotencyStore {
  return {
    capabilities: store.capabilities,
    acquire: async (input) => {
      await sleep(delayMs);
      const answer = store.acquire(input);
      landed.push(answer.catch(() => undefined));
      return answer;
    },
    complete: (i, c) => store.complete(i, c),
    release: (i, c) => store.release(i, c),
    extend: (i, c) => store.extend(i, c),
    get: (k) => store.get(k),
  };
}

describe.each(storeKinds)('edge34 on a real store (%s, rev34e)', (kind) => {
  const env = useEnv(kind);

  it('a batch claim given up at the deadline and applied anyway is given back; the redelivery runs once', async () => {
    const { store } = env();
    const runs: string[] = [];
    const record = sqsRecord('a');
    const landed: Promise<unknown>[] = [];
    const first = makeSqsBatchHandler(async (r: { messageId: string }) => runs.push(r.messageId), {
      store: appliedLate(store, 150, landed),
      heartbeatMs: false,
      timeoutMarginMs: 100,
    });
    expect(await first({ Records: [record] }, fakeContext(200))).toEqual({
      batchItemFailures: [{ itemIdentifier: record.messageId }],
    });
    // The late acquire has landed (DynamoDB Local answered it after a first give-back had
    // already released the key: the poll below saw `released` and the redelivery met the late
    // claim in progress); core gives it back once it sees it.
    for (let i = 0; i < 100 && landed.length === 0; i++) await sleep(10);
    await Promise.all(landed);
    // Given back when core sees it (rev34e-abandoned-claim asserts that on the memory store);
    // on DynamoDB Local the late claim can land after core's last look and hold the key for its
    // own lease (a CI lane saw it in progress after 1 s): the redeliveries below wait it out.
    const again = makeSqsBatchHandler(async (r: { messageId: string }) => runs.push(r.messageId), {
      store,
    });
    // Redelivered as SQS does until it succeeds (a late claim that landed after core's last
    // look holds the key until its own lease passes: an availability cost, never a second run).
    let answer = await again({ Records: [record] }, fakeContext(3_000));
    for (let i = 0; i < 40 && answer.batchItemFailures.length > 0; i++) {
      await sleep(50);
      answer = await again({ Records: [record] }, fakeContext(3_000));
    }
    expect(answer).toEqual({ batchItemFailures: [] });
    expect(runs).toEqual([record.messageId]);
  });

  it('heartbeatMs false: a duplicate while the handler runs past leaseMs meets it in progress; one run', async () => {
    const { store } = env();
    let runs = 0;
    let release: (() => void) | undefined;
    let started: (() => void) | undefined;
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    const handler = makeIdempotent(
      async () => {
        runs += 1;
        started?.();
        await new Promise<void>((r) => {
          release = r;
        });
        return 'done';
      },
      { store, scope: functionScope, key: () => 'k', leaseMs: 50, heartbeatMs: false },
    );
    const first = handler({}, fakeContext(5_000));
    const started_ = running;
    await started_;
    await sleep(120); // past leaseMs, well within the time left
    const second = await handler({}, fakeContext(5_000)).then(
      () => 'ran',
      (error: unknown) => (error as { code?: string }).code,
    );
    expect(second).toBe('IN_PROGRESS');
    release?.();
    expect(await first).toBe('done');
    expect(runs).toBe(1);
  });
});
