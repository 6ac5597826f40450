import type { KinesisStreamRecord, SQSRecord } from 'aws-lambda';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../../store-memory/src/index.js';
import { makeKinesisBatchHandler, makeSqsBatchHandler, type RecordReport } from '../src/index.js';
import { fakeContext, kinesisRecord, redeliver, sqsRecord } from './lambda-env.js';

// mutcl (second mutation audit of the batch path): what the first audit's mutants did not reach.

const statuses = (reports: RecordReport<unknown>[]) => reports.map((r) => r.status);

describe('mutcl: the SQS batch path', () => {
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
});
