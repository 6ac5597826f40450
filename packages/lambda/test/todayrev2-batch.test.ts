import type { IdempotencyStore, OutcomePolicy } from '@idem/core';
import type { DynamoDBRecord, KinesisStreamRecord, SQSRecord } from 'aws-lambda';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../../store-memory/src/index.js';
import {
  makeDynamoDbStreamBatchHandler,
  makeKinesisBatchHandler,
  makeSqsBatchHandler,
  type RecordReport,
} from '../src/index.js';
import { fakeContext, kinesisRecord, redeliver, sqsRecord, streamRecord } from './lambda-env.js';

// Attacks on today's change (a success the isFinal policy threw about is reported processed,
// the policy's error attached), wt/todayrev2.

const statuses = (reports: RecordReport<unknown>[]) => reports.map((r) => r.status);
const kinesisData = (r: KinesisStreamRecord) => Buffer.from(r.kinesis.data, 'base64').toString();

/** A policy that throws `thrown` of every success and keeps nothing else. */
const throwingOfSuccess =
  (thrown: unknown): OutcomePolicy<unknown> =>
  (settled) => {
    if (settled.ok) throw thrown;
    return false;
  };

/** A memory store whose every `complete` fails with `error`: the outcome is never recorded. */
const failingToRecord = (error: Error): IdempotencyStore => {
  const memory = createMemoryStore();
  return new Proxy(memory, {
    get(target, name, receiver) {
      if (name === 'complete') return () => Promise.reject(error);
      return Reflect.get(target, name, receiver);
    },
  }) as IdempotencyStore;
};

describe('@idem/lambda batch, a policy that throws of a success (todayrev2)', () => {
  // FINDING LOW: a policy that throws `undefined` (a rethrow of a missing cause) or NaN was told apart
  // by `policyError !== undefined` (and `===`): its success, recorded, was reported failed and sent back,
  // and on an ordered shard the records behind it were not attempted.
  for (const thrown of [undefined, null, 0, '', Number.NaN]) {
    it(`Kinesis, a policy throwing ${typeof thrown} ${JSON.stringify(String(thrown))} of a success: processed, the shard goes on`, async () => {
      const reports: RecordReport<KinesisStreamRecord>[] = [];
      const ran: string[] = [];
      const handler = makeKinesisBatchHandler(
        async (record: KinesisStreamRecord) => {
          ran.push(kinesisData(record));
          return 'ok';
        },
        {
          store: createMemoryStore(),
          isFinal: throwingOfSuccess(thrown),
          onRecord: (r) => reports.push(r as RecordReport<KinesisStreamRecord>),
        },
      );
      const response = await handler(
        { Records: [kinesisRecord('first'), kinesisRecord('after')] },
        fakeContext(10_000),
      );
      expect(ran).toEqual(['first', 'after']);
      expect(statuses(reports)).toEqual(['processed', 'processed']);
      expect(response.batchItemFailures).toEqual([]);
    });
  }

  it("a policy that throws of failures: the failure is released, sent back, and the redelivery runs it (not 'processed')", async () => {
    const reports: RecordReport<SQSRecord>[] = [];
    let runs = 0;
    const handler = makeSqsBatchHandler(
      async () => {
        runs += 1;
        if (runs === 1) throw new Error('downstream down');
        return 'ok';
      },
      {
        store: createMemoryStore(),
        isFinal: (settled) => {
          if (!settled.ok) throw new Error('policy bug of failures');
          return true;
        },
        onRecord: (r) => reports.push(r as RecordReport<SQSRecord>),
      },
    );
    const event = { Records: [sqsRecord('one')] };
    const first = await handler(event, fakeContext(10_000));
    expect(first.batchItemFailures).toEqual([{ itemIdentifier: event.Records[0]?.messageId }]);
    expect(statuses(reports)).toEqual(['failed']);
    await handler(redeliver(event), fakeContext(10_000));
    expect([runs, statuses(reports)]).toEqual([2, ['failed', 'processed']]);
  });

  it("a policy that rethrows the handler's own error object: still the handler's failure, sent back", async () => {
    const shared = new Error('shared');
    const reports: RecordReport<KinesisStreamRecord>[] = [];
    const handler = makeKinesisBatchHandler(
      async (record: KinesisStreamRecord) => {
        if (kinesisData(record) === 'bad') throw shared;
        return 'ok';
      },
      {
        store: createMemoryStore(),
        // Throws the same object of every outcome, the handler's failure among them.
        isFinal: () => {
          throw shared;
        },
        onRecord: (r) => reports.push(r as RecordReport<KinesisStreamRecord>),
      },
    );
    const bad = kinesisRecord('bad');
    const after = kinesisRecord('after');
    const response = await handler(
      { Records: [kinesisRecord('good'), bad, after] },
      fakeContext(10_000),
    );
    expect(statuses(reports)).toEqual(['processed', 'failed', 'not_attempted']);
    expect(reports[0]?.error).toBe(shared);
    expect(response.batchItemFailures[0]).toEqual({ itemIdentifier: bad.kinesis.sequenceNumber });
  });

  it('a store that fails recording after the policy threw: failed (not processed), and the policy error is not reported', async () => {
    const storeDown = new Error('store down while recording');
    const store = failingToRecord(storeDown);
    const policyError = new Error('policy bug');
    const reports: RecordReport<DynamoDBRecord>[] = [];
    const handler = makeDynamoDbStreamBatchHandler(async () => 'ok', {
      store,
      storeTimeoutMs: 500,
      isFinal: throwingOfSuccess(policyError),
      onRecord: (r) => reports.push(r as RecordReport<DynamoDBRecord>),
    });
    const first = streamRecord('a');
    const response = await handler({ Records: [first, streamRecord('b')] }, fakeContext(10_000));
    expect(statuses(reports)).toEqual(['failed', 'not_attempted']);
    expect(reports[0]?.error).not.toBe(policyError);
    expect(response.batchItemFailures[0]).toEqual({
      itemIdentifier: first.dynamodb?.SequenceNumber,
    });
  });

  it('DynamoDB Streams and SQS: the redelivery of a success the policy threw about replays, never runs twice', async () => {
    const store = createMemoryStore();
    let runs = 0;
    const reports: RecordReport<unknown>[] = [];
    const options = {
      store,
      isFinal: throwingOfSuccess(new Error('policy bug')),
      onRecord: (r: RecordReport<unknown>) => reports.push(r),
    };
    const ddb = makeDynamoDbStreamBatchHandler(async () => {
      runs += 1;
      return 'ok';
    }, options);
    const event = { Records: [streamRecord('x'), streamRecord('y')] };
    expect((await ddb(event, fakeContext(10_000))).batchItemFailures).toEqual([]);
    expect((await ddb(event, fakeContext(10_000))).batchItemFailures).toEqual([]);
    const sqs = makeSqsBatchHandler(async () => {
      runs += 1;
      return 'ok';
    }, options);
    const sqsEvent = { Records: [sqsRecord('z')] };
    await sqs(sqsEvent, fakeContext(10_000));
    await sqs(redeliver(sqsEvent), fakeContext(10_000));
    expect(runs).toBe(3);
    expect(statuses(reports)).toEqual([
      'processed',
      'processed',
      'replayed',
      'replayed',
      'processed',
      'replayed',
    ]);
  });

  it("an engine error that is not the policy's own object is never taken for it (identity, not equality)", async () => {
    // The policy throws an error of a success; the store then fails recording with an equal
    // (same class and message) error: a store failure, so failed (unrecorded), not processed.
    const store = failingToRecord(new Error('policy bug'));
    const reports: RecordReport<SQSRecord>[] = [];
    const handler = makeSqsBatchHandler(async () => 'ok', {
      store,
      storeTimeoutMs: 500,
      isFinal: throwingOfSuccess(new Error('policy bug')),
      onRecord: (r) => reports.push(r as RecordReport<SQSRecord>),
    });
    const event = { Records: [sqsRecord('one')] };
    const response = await handler(event, fakeContext(10_000));
    expect(statuses(reports)).toEqual(['failed']);
    expect(response.batchItemFailures).toHaveLength(1);
  });
});
