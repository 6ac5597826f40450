import type { DynamoDBRecord, KinesisStreamRecord, SQSRecord } from 'aws-lambda';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../../store-memory/src/index.js';
import {
  makeDynamoDbStreamBatchHandler,
  makeIdempotent,
  makeKinesisBatchHandler,
  makeSqsBatchHandler,
  type RecordReport,
} from '../src/index.js';
import { fakeContext, kinesisRecord, redeliver, sqsRecord, streamRecord } from './lambda-env.js';

// mutcl (second mutation audit of the batch path): what the first audit's mutants did not reach.

const statuses = (reports: RecordReport<unknown>[]) => reports.map((r) => r.status);

describe('mutcl: the batch path', () => {
  it('a record reached once the deadline has passed is not attempted: its handler never starts', async () => {
    // The memory store answers at once, so the first record's outcome lands in microtasks,
    // before its deadline timer can fire: it is processed, and the loop reaches the second
    // record past the deadline. Started then, it would run beside Lambda's answer (and the
    // redelivery it asks for).
    const ran: string[] = [];
    const reports: RecordReport<SQSRecord>[] = [];
    const handler = makeSqsBatchHandler(
      async (record: SQSRecord) => {
        ran.push(record.body);
        if (record.body === 'slow') {
          // Holds the event loop past the deadline (~1 s from the call), then returns.
          const until = performance.now() + 1_100;
          while (performance.now() < until) {
            // busy: no timer can fire meanwhile
          }
        }
        return record.body;
      },
      {
        store: createMemoryStore(),
        timeoutMarginMs: 1_000,
        onRecord: (r) => reports.push(r as RecordReport<SQSRecord>),
      },
    );
    const late = sqsRecord('late');
    const response = await handler({ Records: [sqsRecord('slow'), late] }, fakeContext(2_000));
    expect(ran).toEqual(['slow']);
    expect(statuses(reports)).toEqual(['processed', 'not_attempted']);
    expect(response.batchItemFailures).toEqual([{ itemIdentifier: late.messageId }]);
  });

  // FINDING (LOW, fixed): a policy that fails of a success (answers a Promise, or throws) still
  // has the success recorded (core keeps it, then throws the policy's error): the batch took
  // that error for the record's failure and sent it back (SQS: one more delivery, which
  // replays; Kinesis: reported `rejected` for INVALID_INPUT), although it ran and is recorded.
  const promisePolicy = ((settled: { ok: boolean }) => Promise.resolve(settled.ok)) as never;
  it('SQS, a policy answering a Promise of a success: the record is recorded and reported processed (with the error), not sent back', async () => {
    let runs = 0;
    const reports: RecordReport<SQSRecord>[] = [];
    const handler = makeSqsBatchHandler(
      async (record: SQSRecord) => {
        runs += 1;
        return record.body;
      },
      {
        store: createMemoryStore(),
        isFinal: promisePolicy,
        onRecord: (r) => reports.push(r as RecordReport<SQSRecord>),
      },
    );
    const event = { Records: [sqsRecord('steady')] };
    expect((await handler(event, fakeContext(10_000))).batchItemFailures).toEqual([]);
    expect(statuses(reports)).toEqual(['processed']);
    expect(reports[0]?.error).toBeInstanceOf(Error);
    expect((await handler(redeliver(event), fakeContext(10_000))).batchItemFailures).toEqual([]);
    expect(statuses(reports)).toEqual(['processed', 'replayed']);
    expect(runs).toBe(1);
  });

  it('Kinesis, a policy that throws of a success: processed (not rejected), the failure of another record still sent back', async () => {
    const reports: RecordReport<KinesisStreamRecord>[] = [];
    const handler = makeKinesisBatchHandler(
      async (record: KinesisStreamRecord) => {
        if (Buffer.from(record.kinesis.data, 'base64').toString() === 'bad')
          throw new Error('downstream down');
        return 'ok';
      },
      {
        store: createMemoryStore(),
        isFinal: (settled) => {
          if (settled.ok) throw new Error('policy bug');
          return false;
        },
        onRecord: (r) => reports.push(r as RecordReport<KinesisStreamRecord>),
      },
    );
    const bad = kinesisRecord('bad');
    const response = await handler(
      { Records: [kinesisRecord('good'), bad, kinesisRecord('after')] },
      fakeContext(10_000),
    );
    expect(statuses(reports)).toEqual(['processed', 'failed', 'not_attempted']);
    expect(reports[0]?.error).toEqual(new Error('policy bug'));
    expect(response.batchItemFailures[0]).toEqual({ itemIdentifier: bad.kinesis.sequenceNumber });
  });

  it('Kinesis, a key function that throws (maybe transient) for one record: the shard stops there', async () => {
    // Its error is its own (a lookup that failed): the record is sent back, and an ordered
    // source must not process the records behind it before it (they would run again, out of
    // order, when the shard resumes from the failed one).
    const ran: string[] = [];
    const reports: RecordReport<KinesisStreamRecord>[] = [];
    const data = (record: KinesisStreamRecord) =>
      Buffer.from(record.kinesis.data, 'base64').toString();
    const handler = makeKinesisBatchHandler(
      async (record: KinesisStreamRecord) => {
        ran.push(data(record));
        return 'ok';
      },
      {
        store: createMemoryStore(),
        key: (record) => {
          if (data(record) === 'lookup-fails') throw new Error('key lookup timed out');
          return record.eventID;
        },
        onRecord: (r) => reports.push(r as RecordReport<KinesisStreamRecord>),
      },
    );
    const failing = kinesisRecord('lookup-fails');
    const after = kinesisRecord('after');
    const response = await handler(
      { Records: [kinesisRecord('first'), failing, after] },
      fakeContext(10_000),
    );
    expect(ran).toEqual(['first']);
    expect(statuses(reports)).toEqual(['processed', 'failed', 'not_attempted']);
    expect(response.batchItemFailures).toEqual([
      { itemIdentifier: failing.kinesis.sequenceNumber },
      { itemIdentifier: after.kinesis.sequenceNumber },
    ]);
  });

  it('SQS, records with a MessageGroupId (a FIFO event without its queue ARN) are ordered: stop at the first failure', async () => {
    const ran: string[] = [];
    const handler = makeSqsBatchHandler(
      async (record: SQSRecord) => {
        ran.push(record.body);
        if (record.body === 'second') throw new Error('payment service down');
        return 'ok';
      },
      { store: createMemoryStore() },
    );
    const records = ['first', 'second', 'third'].map((body) => {
      const { eventSourceARN: _arn, ...record } = sqsRecord(body, true);
      return record as SQSRecord;
    });
    const response = await handler({ Records: records }, fakeContext(10_000));
    expect(ran).toEqual(['first', 'second']);
    expect(response.batchItemFailures.map((f) => f.itemIdentifier)).toEqual([
      records[1]?.messageId,
      records[2]?.messageId,
    ]);
  });

  it('Kinesis, the default payload is the partition key and the data: another partition key under a recorded key is rejected (MISMATCH)', async () => {
    const reports: RecordReport<KinesisStreamRecord>[] = [];
    let runs = 0;
    const handler = makeKinesisBatchHandler(
      async () => {
        runs += 1;
        return 'ok';
      },
      {
        store: createMemoryStore(),
        key: (record) => Buffer.from(record.kinesis.data, 'base64').toString(),
        onRecord: (r) => reports.push(r as RecordReport<KinesisStreamRecord>),
      },
    );
    const first = kinesisRecord('order-9');
    const other = kinesisRecord('order-9');
    other.kinesis.partitionKey = 'another-tenant';
    await handler({ Records: [first] }, fakeContext(10_000));
    await handler({ Records: [other] }, fakeContext(10_000));
    expect(statuses(reports)).toEqual(['processed', 'rejected']);
    expect((reports[1]?.error as { code?: string } | undefined)?.code).toBe('MISMATCH');
    expect(runs).toBe(1);
  });

  it('DynamoDB Streams, the default key is the eventID: a record seen again under its eventID replays', async () => {
    const reports: RecordReport<DynamoDBRecord>[] = [];
    let runs = 0;
    const handler = makeDynamoDbStreamBatchHandler(
      async () => {
        runs += 1;
        return 'ok';
      },
      {
        store: createMemoryStore(),
        onRecord: (r) => reports.push(r as RecordReport<DynamoDBRecord>),
      },
    );
    const record = streamRecord('order-3');
    // The same event (eventID) as a replay tool or a second consumer of a copy sees it,
    // under another sequence number.
    const again = { ...record, dynamodb: { ...record.dynamodb, SequenceNumber: '7' } };
    await handler({ Records: [record] }, fakeContext(10_000));
    await handler({ Records: [again] }, fakeContext(10_000));
    expect(statuses(reports)).toEqual(['processed', 'replayed']);
    expect(runs).toBe(1);
  });
});

describe('mutcl: makeIdempotent', () => {
  it('a scope function separates its scopes: the same key under two tenants runs twice, each replays its own', async () => {
    const ran: string[] = [];
    const handler = makeIdempotent(
      async (event: { tenant: string; orderId: string }) => {
        ran.push(event.tenant);
        return `${event.tenant} charged`;
      },
      {
        store: createMemoryStore(),
        key: (event) => event.orderId,
        scope: (event) => ['billing', event.tenant],
      },
    );
    expect(await handler({ tenant: 'acme', orderId: 'o-1' }, fakeContext(10_000))).toBe(
      'acme charged',
    );
    expect(await handler({ tenant: 'globex', orderId: 'o-1' }, fakeContext(10_000))).toBe(
      'globex charged',
    );
    expect(await handler({ tenant: 'acme', orderId: 'o-1' }, fakeContext(10_000))).toBe(
      'acme charged',
    );
    expect(ran).toEqual(['acme', 'globex']);
  });
});
