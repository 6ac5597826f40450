import { setTimeout as sleep } from 'node:timers/promises';
import type { Context, DynamoDBRecord, KinesisStreamRecord, SQSRecord } from 'aws-lambda';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  makeDynamoDbStreamBatchHandler,
  makeKinesisBatchHandler,
  makeSqsBatchHandler,
  type RecordReport,
  type RecordStatus,
} from '../src/index.js';
import {
  type Env,
  fakeContext,
  kinesisRecord,
  openEnv,
  redeliver,
  type SQSEvent,
  sqsRecord,
  storeKinds,
  streamRecord,
} from './lambda-env.js';

/** How many times the handler ran, per record key. */
const counter = () => {
  const runs = new Map<string, number>();
  return {
    runs,
    bump: (id: string) => {
      const n = (runs.get(id) ?? 0) + 1;
      runs.set(id, n);
      return n;
    },
    total: () => [...runs.values()].reduce((a, b) => a + b, 0),
  };
};

const statuses = <T>(reports: RecordReport<T>[]): RecordStatus[] => reports.map((r) => r.status);

describe.each(storeKinds)('batches on %s', (kind) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv(kind);
  });
  afterEach(async () => {
    await env.close();
  });

  it('SQS: only the failed record is reported; a redelivered batch runs only that one', async () => {
    const count = counter();
    const reports: RecordReport<SQSRecord>[] = [];
    const handler = makeSqsBatchHandler(
      async (record: SQSRecord, _ctx: Context, idem) => {
        const n = count.bump(record.body);
        if (record.body === 'order-2' && n === 1) throw new Error('payment service down');
        await env.ledger.write(record.body, idem.fence, 'shipped');
        return { shipped: record.body };
      },
      { store: env.store, onRecord: (r) => reports.push(r) },
    );
    const event: SQSEvent = {
      Records: Array.from({ length: 6 }, (_, i) => sqsRecord(`order-${i}`)),
    };
    const first = await handler(event, fakeContext(10_000));
    expect(first.batchItemFailures).toEqual([{ itemIdentifier: event.Records[2]?.messageId }]);
    expect(statuses(reports)).toEqual([
      'processed',
      'processed',
      'failed',
      'processed',
      'processed',
      'processed',
    ]);
    reports.length = 0;
    // The whole batch again (the response was lost, or the visibility timeout passed).
    const second = await handler(redeliver(event), fakeContext(10_000));
    expect(second.batchItemFailures).toEqual([]);
    expect(statuses(reports)).toEqual([
      'replayed',
      'replayed',
      'processed',
      'replayed',
      'replayed',
      'replayed',
    ]);
    expect(count.total()).toBe(7); // 6 + the one retry of order-2
    expect((await env.ledger.entries()).size).toBe(6);
    expect(await env.ledger.stats()).toEqual({ written: 6, replaced: 0, stale: 0 });
  });

  it('SQS FIFO: stops at the first failure and reports it and every later record', async () => {
    const count = counter();
    const reports: RecordReport<SQSRecord>[] = [];
    let failing = true;
    const handler = makeSqsBatchHandler(
      async (record: SQSRecord, _ctx: Context, idem) => {
        count.bump(record.body);
        if (record.body === 'step-1' && failing) throw new Error('not yet');
        await env.ledger.write(record.body, idem.fence, 'done');
      },
      { store: env.store, onRecord: (r) => reports.push(r) },
    );
    const event: SQSEvent = {
      Records: Array.from({ length: 5 }, (_, i) => sqsRecord(`step-${i}`, true)),
    };
    const first = await handler(event, fakeContext(10_000));
    expect(first.batchItemFailures.map((f) => f.itemIdentifier)).toEqual(
      event.Records.slice(1).map((r) => r.messageId),
    );
    expect(statuses(reports)).toEqual([
      'processed',
      'failed',
      'not_attempted',
      'not_attempted',
      'not_attempted',
    ]);
    failing = false;
    const retry = await handler(
      { Records: redeliver(event).Records.slice(1) },
      fakeContext(10_000),
    );
    expect(retry.batchItemFailures).toEqual([]);
    expect([...count.runs.values()]).toEqual([1, 2, 1, 1, 1]);
    expect(await env.ledger.stats()).toEqual({ written: 5, replaced: 0, stale: 0 });
  });

  it('Kinesis: a handler that times out mid-batch; retries take the record over once its lease (capped at the deadline) passes', async () => {
    const count = counter();
    const reports: RecordReport<KinesisStreamRecord>[] = [];
    const records = Array.from({ length: 5 }, (_, i) => kinesisRecord(`reading-${i}`));
    const id = (r: KinesisStreamRecord) => Buffer.from(r.kinesis.data, 'base64').toString();
    let zombie: Promise<unknown> | undefined;
    const handler = makeKinesisBatchHandler(
      async (record: KinesisStreamRecord, _ctx: Context, idem) => {
        const n = count.bump(id(record));
        if (id(record) === 'reading-2' && n === 1) {
          // Hangs past the invocation's deadline, then writes with its (stale) fence.
          zombie = sleep(5_000).then(() => env.ledger.write(id(record), idem.fence, 'late'));
          return zombie;
        }
        return env.ledger.write(id(record), idem.fence, 'stored');
      },
      { store: env.store, timeoutMarginMs: 500, onRecord: (r) => reports.push(r) },
    );
    const first = await handler({ Records: records }, fakeContext(3_000));
    expect(statuses(reports)).toEqual([
      'processed',
      'processed',
      'timed_out',
      'not_attempted',
      'not_attempted',
    ]);
    expect(first.batchItemFailures.map((f) => f.itemIdentifier)).toEqual(
      records.slice(2).map((r) => r.kinesis.sequenceNumber),
    );
    // Lambda retries from the first failed sequence number until the batch goes through.
    let pending = records.slice(2);
    let attempts = 0;
    while (pending.length > 0 && attempts < 40) {
      attempts += 1;
      await sleep(200);
      const { batchItemFailures } = await handler({ Records: pending }, fakeContext(5_000));
      const failed = new Set(batchItemFailures.map((f) => f.itemIdentifier));
      pending = pending.filter((r) => failed.has(r.kinesis.sequenceNumber));
    }
    expect(pending).toEqual([]);
    await zombie;
    // Then the whole original batch once more: nothing runs.
    const before = count.total();
    reports.length = 0;
    expect((await handler({ Records: records }, fakeContext(5_000))).batchItemFailures).toEqual([]);
    expect(statuses(reports)).toEqual(Array(5).fill('replayed'));
    expect(count.total()).toBe(before);
    const entries = await env.ledger.entries();
    expect(entries.size).toBe(5);
    expect(entries.get('reading-2')).toEqual({ fence: 2, value: 'stored' });
    // 5 committed side effects, the zombie's refused: none twice, none lost.
    expect(await env.ledger.stats()).toEqual({ written: 5, replaced: 0, stale: 1 });
  });

  it('DynamoDB Streams: ordered, keyed by eventID, reported by sequence number', async () => {
    const count = counter();
    const records = Array.from({ length: 4 }, (_, i) => streamRecord(`item-${i}`));
    const handler = makeDynamoDbStreamBatchHandler(
      async (record: DynamoDBRecord, _ctx: Context, idem) => {
        const itemId = record.dynamodb?.Keys?.id?.S ?? '';
        count.bump(itemId);
        if (itemId === 'item-1') throw new Error('poison');
        await env.ledger.write(itemId, idem.fence, 'indexed');
      },
      { store: env.store },
    );
    const { batchItemFailures } = await handler({ Records: records }, fakeContext(10_000));
    expect(batchItemFailures.map((f) => f.itemIdentifier)).toEqual(
      records.slice(1).map((r) => r.dynamodb?.SequenceNumber),
    );
    expect([...count.runs.entries()]).toEqual([
      ['item-0', 1],
      ['item-1', 1],
    ]);
    await handler({ Records: records }, fakeContext(10_000));
    expect(count.runs.get('item-0')).toBe(1); // replayed
    expect(count.runs.get('item-1')).toBe(2); // failed, released, ran again
  });
});
