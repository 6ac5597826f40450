import { everythingFinal, type IdempotencyStore, LeaseLostError } from '@idem/core';
import type { Context, SQSRecord } from 'aws-lambda';
import { describe, expect, it } from 'vitest';
import {
  functionScope,
  type IdempotencyInfo,
  makeIdempotent,
  makeSqsBatchHandler,
  type RecordReport,
} from '../src/index.js';
import { fakeContext, sleep, sqsRecord, useEnv } from './lambda-env.js';

// lambda21: a batch record reported `timed_out` (the invocation's deadline came while its
// handler ran) goes on in the background: Lambda freezes the environment once the batch has
// answered and a later invocation thaws it. These tests pin what that late handler can still
// do: its signal aborts before the answer (so a handler that honours it stops), it never
// starts when its key was acquired only after the answer, and once the redelivery took its key
// over its outcome and fenced writes are refused (the redelivery's outcome is the one
// replayed).

/** The store's `acquire` takes `ms` before it starts. */
function slowAcquire(store: IdempotencyStore, ms: number): IdempotencyStore {
  return new Proxy(store, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (prop === 'acquire' && typeof v === 'function') {
        return async (...args: unknown[]) => {
          await sleep(ms);
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

const statuses = (reports: RecordReport<SQSRecord>[]) => reports.map((r) => r.status);

describe('lambda21: a timed-out batch record (redis)', () => {
  const env = useEnv('redis');

  it('its signal aborts (TimeoutError) before the batch answers; a handler that honours it stops and frees the key for the redelivery (any isFinal)', async () => {
    // (With everythingFinal too: the failure the abort makes is the deadline's, never the
    // record's final outcome; recorded, the redelivery would be `replayed` and never run.)
    for (const isFinal of [undefined, everythingFinal]) {
      let runs = 0;
      let seen: AbortSignal | undefined;
      let stopped: Promise<unknown> | undefined;
      const reports: RecordReport<SQSRecord>[] = [];
      const handler = makeSqsBatchHandler(
        async (record: SQSRecord, _ctx: Context, idem: IdempotencyInfo) => {
          runs += 1;
          if (runs > 1) return `${record.body} shipped`;
          const { signal } = idem;
          seen = signal;
          stopped = new Promise((_, reject) => {
            signal.addEventListener('abort', () => reject(signal.reason), { once: true });
          });
          return stopped;
        },
        { store: env().store, isFinal, timeoutMarginMs: 300, onRecord: (r) => reports.push(r) },
      );
      const record = sqsRecord(`order-1-${isFinal ? 'final' : 'default'}`);
      const first = await handler({ Records: [record] }, fakeContext(800));
      expect(statuses(reports)).toEqual(['timed_out']);
      expect(first.batchItemFailures).toEqual([{ itemIdentifier: record.messageId }]);
      // Aborted by the batch, not at the lease's end (the lease lasts until ~800 ms).
      expect(seen?.aborted).toBe(true);
      expect((seen?.reason as Error | undefined)?.name).toBe('TimeoutError');
      await expect(stopped).rejects.toThrow(/timed_out/);
      // The handler stopped and its release lands: a redelivery runs (without the release, one
      // gets InProgressError until the lease lapses at the first invocation's deadline).
      let seenStatuses: string[] = [];
      for (let i = 0; i < 10; i++) {
        await sleep(50);
        reports.length = 0;
        await handler({ Records: [record] }, fakeContext(10_000));
        seenStatuses = statuses(reports);
        if (seenStatuses[0] !== 'failed') break; // (InProgressError while the release is in flight)
      }
      expect(seenStatuses).toEqual(['processed']);
      expect(runs).toBe(2);
    }
  });

  it('held: isFinal: everythingFinal: a failure before the deadline is still final (replayed, never run again)', async () => {
    let runs = 0;
    const reports: RecordReport<SQSRecord>[] = [];
    const failing = makeSqsBatchHandler(
      async (_record: SQSRecord) => {
        runs += 1;
        throw new Error('declined');
      },
      {
        store: env().store,
        isFinal: everythingFinal,
        timeoutMarginMs: 300,
        onRecord: (r) => reports.push(r),
      },
    );
    const record = sqsRecord('order-final');
    await failing({ Records: [record] }, fakeContext(10_000));
    await failing({ Records: [record] }, fakeContext(10_000));
    expect(statuses(reports)).toEqual(['failed', 'replayed']);
    expect(runs).toBe(1);
  });

  it('a handler that ignores the signal and ends after the takeover: its outcome and fenced write are refused, the redelivery is replayed', async () => {
    let runs = 0;
    let late: Promise<void> | undefined;
    const reports: RecordReport<SQSRecord>[] = [];
    const handler = makeSqsBatchHandler(
      async (record: SQSRecord, _ctx: Context, idem: IdempotencyInfo) => {
        runs += 1;
        if (runs > 1) {
          await env().ledger.write(record.messageId, idem.fence, 'second');
          return 'second';
        }
        late = sleep(1_500);
        await late;
        await env().ledger.write(record.messageId, idem.fence, 'late');
        return 'late';
      },
      {
        store: env().store,
        payload: false,
        timeoutMarginMs: 300,
        onRecord: (r) => reports.push(r),
      },
    );
    const record = sqsRecord('order-2');
    await handler({ Records: [record] }, fakeContext(800));
    expect(statuses(reports)).toEqual(['timed_out']);
    await sleep(700); // past the first invocation's deadline: its lease has lapsed
    reports.length = 0;
    await handler({ Records: [record] }, fakeContext(10_000));
    expect(statuses(reports)).toEqual(['processed']);
    await late;
    await sleep(300); // the late handler's write and its refused complete
    const replay = makeIdempotent(async () => 'third', {
      scope: functionScope,
      store: env().store,
      key: () => record.messageId,
    });
    expect(await replay({}, fakeContext(10_000))).toBe('second');
    expect(runs).toBe(2);
    expect((await env().ledger.entries()).get(record.messageId)).toEqual({
      fence: 2,
      value: 'second',
    });
    expect(await env().ledger.stats()).toEqual({ written: 1, replaced: 0, stale: 1 });
  });

  it('a key acquired only after the batch gave the record up: the handler never starts, the key is released (any isFinal)', async () => {
    for (const isFinal of [undefined, everythingFinal]) {
      let runs = 0;
      const reports: RecordReport<SQSRecord>[] = [];
      const slow = makeSqsBatchHandler(
        async (_record: SQSRecord) => {
          runs += 1;
          return 'ran';
        },
        {
          store: slowAcquire(env().store, 600),
          isFinal,
          timeoutMarginMs: 300,
          onRecord: (r) => reports.push(r),
        },
      );
      const record = sqsRecord(`order-3-${isFinal ? 'final' : 'default'}`);
      await slow({ Records: [record] }, fakeContext(800));
      expect(statuses(reports)).toEqual(['timed_out']);
      await sleep(700); // the acquisition lands (~600 ms) and is given back
      expect(runs).toBe(0);
      reports.length = 0;
      const fast = makeSqsBatchHandler(
        async (_record: SQSRecord) => {
          runs += 1;
          return 'ran';
        },
        { store: env().store, isFinal, onRecord: (r) => reports.push(r) },
      );
      expect((await fast({ Records: [record] }, fakeContext(10_000))).batchItemFailures).toEqual(
        [],
      );
      expect(statuses(reports)).toEqual(['processed']);
      expect(runs).toBe(1);
    }
  });

  it('the signal read first after the give-up is aborted already; the info spreads like the engine context', async () => {
    let late: { reason: string | undefined; keys: string[]; same: boolean } | undefined;
    let done: Promise<void> | undefined;
    const handler = makeSqsBatchHandler(
      async (_record: SQSRecord, _ctx: Context, idem: IdempotencyInfo) => {
        done = sleep(800).then(() => {
          const first = idem.signal;
          const reason = first.reason as Error | undefined;
          late = {
            reason: reason?.name,
            keys: Object.keys({ ...idem }),
            same: idem.signal === first,
          };
        });
        await done;
      },
      { store: env().store, timeoutMarginMs: 300 },
    );
    // (given up at ~700 ms, read at ~800 ms: the give-up's reason, even if the lease lapsed)
    await handler({ Records: [sqsRecord('order-4')] }, fakeContext(1_000));
    await done;
    expect(late).toEqual({
      reason: 'TimeoutError',
      keys: ['fence', 'signal', 'storageKey', 'originId'],
      same: true,
    });
  });

  it('held: a lost lease still aborts the signal (LeaseLostError) through the batch', async () => {
    let reason: unknown;
    const handler = makeSqsBatchHandler(
      async (_record: SQSRecord, _ctx: Context, idem: IdempotencyInfo) => {
        const { signal } = idem;
        await sleep(700);
        reason = signal.reason;
      },
      { store: env().store, leaseMs: 300, heartbeatMs: false },
    );
    // (a context without a deadline: the record never times out, its lease lapses at 300 ms)
    await handler({ Records: [sqsRecord('order-5')] }, { functionName: 'orders-fn' } as Context);
    expect(reason).toBeInstanceOf(LeaseLostError);
  });
});
