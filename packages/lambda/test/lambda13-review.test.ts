import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidInputError, isIdemError } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { startPrivateRedis } from '@idem/test-ledger';
import type { KinesisStreamRecord, SQSRecord } from 'aws-lambda';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  functionScope,
  makeIdempotent,
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
  sqsRecord,
} from './lambda-env.js';

// Adversarial review 13 of @idem/lambda (Redis with a random prefix; a private redis-server
// for the store outage): records that fail the same way at every delivery on an ordered
// shard, option checks, duplicates inside and across batches, outcomes over the cap, a store
// that stalls while a record's outcome is written, events without a key.
describe('lambda review 13', () => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });
  const tally = <R>() => {
    const runs = new Map<string, number>();
    const reports: [string, RecordStatus, string?][] = [];
    return {
      runs,
      reports,
      bump: (id: string) => runs.set(id, (runs.get(id) ?? 0) + 1),
      onRecord: (r: RecordReport<R>) =>
        reports.push([
          r.itemIdentifier,
          r.status,
          ...(isIdemError(r.error) ? [r.error.code] : []),
        ] as [string, RecordStatus, string?]),
    };
  };
  const dataOf = (r: KinesisStreamRecord) => Buffer.from(r.kinesis.data, 'base64').toString();

  // FINDING (MEDIUM): a record whose `key` function finds no key (a producer that left the
  // field out) fails with InvalidInputError inside the per-record try, and is reported as a
  // batchItemFailure at every delivery. On Kinesis / DynamoDB Streams (ordered) that blocks
  // the shard behind it until the record expires (Lambda's default maxRetryAttempts is -1),
  // which the README promises never happens ("a record is never sent back for a reason that
  // would repeat at every delivery"); @idem/consumers rejects (dead-letters) the same
  // message. Fix: a key / payload function that returns nothing usable or throws is a
  // permanent verdict: report it (`rejected` in onRecord, with the error) and leave it out of
  // batchItemFailures (or make that an option), as the not-recorded marker case does.
  // fixed: on Kinesis / DynamoDB Streams a record whose key, payload or scope function finds
  // nothing usable or throws is reported `rejected` (with the error) and not sent back.
  it('Kinesis: a record without a key must not block the shard at every delivery', async () => {
    const t = tally<KinesisStreamRecord>();
    const handler = makeKinesisBatchHandler(
      async (record: KinesisStreamRecord) => {
        t.bump(dataOf(record));
        return 'ok';
      },
      {
        store: env.store,
        key: (record) => JSON.parse(dataOf(record)).orderId, // undefined for the bad record
        onRecord: t.onRecord,
      },
    );
    const event = {
      Records: [
        kinesisRecord('{"orderId":"o-1"}'),
        kinesisRecord('{"note":"no order id"}'),
        kinesisRecord('{"orderId":"o-3"}'),
      ],
    };
    const responses = [];
    for (let delivery = 0; delivery < 3; delivery++)
      responses.push(await handler(event, fakeContext(10_000)));
    // Before a fix: every delivery answers [bad, o-3]; o-3 never runs.
    expect(responses.at(-1)).toEqual({ batchItemFailures: [] });
    expect(t.runs.get('{"orderId":"o-3"}')).toBe(1);
  });

  // FINDING (MEDIUM): the same with a payload mismatch: two records under one key (a
  // producer's retry that put a new timestamp in the data, with `key: orderId`) make the
  // second fail with MismatchError at every delivery for the whole retention (24 h): the
  // shard is stuck behind it. MISMATCH can never succeed on a redelivery of the same record.
  // Fix: treat MISMATCH as permanent (reported `rejected`, not in batchItemFailures), as
  // @idem/consumers does (nack without requeue / term).
  // fixed: on Kinesis / DynamoDB Streams MISMATCH (and INVALID_KEY, INVALID_INPUT,
  // NOT_CANONICAL) is reported `rejected` and not sent back; SQS still sends it back (failed)
  // for its redrive policy to dead-letter.
  it('Kinesis: a record whose payload mismatches a recorded key must not block the shard at every delivery', async () => {
    const t = tally<KinesisStreamRecord>();
    const handler = makeKinesisBatchHandler(
      async (record: KinesisStreamRecord) => {
        t.bump(dataOf(record));
        return 'ok';
      },
      {
        store: env.store,
        key: (record) => JSON.parse(dataOf(record)).orderId,
        onRecord: t.onRecord,
      },
    );
    const event = {
      Records: [
        kinesisRecord('{"orderId":"o-7","at":1}'),
        kinesisRecord('{"orderId":"o-7","at":2}'), // the producer's retry, another timestamp
        kinesisRecord('{"orderId":"o-8","at":3}'),
      ],
    };
    const responses = [];
    for (let delivery = 0; delivery < 3; delivery++)
      responses.push(await handler(event, fakeContext(10_000)));
    expect(t.reports.filter((r) => r[2] === 'MISMATCH').length).toBeGreaterThan(0);
    // Before a fix: every delivery answers [o-7 retry, o-8]; o-8 never runs.
    expect(responses.at(-1)).toEqual({ batchItemFailures: [] });
    expect(t.runs.get('{"orderId":"o-8","at":3}')).toBe(1);
  });

  it('permanent verdicts: Kinesis reports them rejected and does not send them back; SQS sends them back as failed (its redrive policy dead-letters them)', async () => {
    const key = (body: string) => JSON.parse(body).orderId;
    const kt = tally<KinesisStreamRecord>();
    const kinesis = makeKinesisBatchHandler(async () => 'ok', {
      store: env.store,
      key: (record) => key(dataOf(record)),
      onRecord: kt.onRecord,
    });
    const kEvent = {
      Records: [
        kinesisRecord('{"orderId":"k-1","at":1}'),
        kinesisRecord('{"note":"no order id"}'),
        kinesisRecord('{"orderId":"k-1","at":2}'),
      ],
    };
    expect(await kinesis(kEvent, fakeContext(10_000))).toEqual({ batchItemFailures: [] });
    expect(kt.reports.map((r) => [r[1], r[2]])).toEqual([
      ['processed', undefined],
      ['rejected', 'INVALID_INPUT'],
      ['rejected', 'MISMATCH'],
    ]);
    const st = tally<SQSRecord>();
    const sqs = makeSqsBatchHandler(async () => 'ok', {
      store: env.store,
      key: (record) => key(record.body),
      onRecord: st.onRecord,
    });
    const sEvent = {
      Records: [
        sqsRecord('{"orderId":"s-1","at":1}'),
        sqsRecord('{"note":"no order id"}'),
        sqsRecord('{"orderId":"s-1","at":2}'),
      ],
    };
    expect(await sqs(sEvent, fakeContext(10_000))).toEqual({
      batchItemFailures: [1, 2].map((i) => ({
        itemIdentifier: sEvent.Records[i]?.messageId,
      })),
    });
    expect(st.reports.map((r) => [r[1], r[2]])).toEqual([
      ['processed', undefined],
      ['failed', 'INVALID_INPUT'],
      ['failed', 'MISMATCH'],
    ]);
  });

  // FINDING (LOW): `timeoutMarginMs` is not checked. NaN makes the deadline NaN: the
  // per-record deadline timer fires after ~1 ms, so records are reported `timed_out` /
  // `not_attempted` and sent back at every delivery; a negative margin puts the batch's own
  // deadline after Lambda's, so Lambda times out and redelivers the whole batch (the thing
  // the margin exists to prevent). Fix: require a finite number >= 0 (InvalidInputError at
  // creation, like the engine options).
  // fixed: the batch handlers throw InvalidInputError at creation unless the margin is finite, >= 0.
  it('timeoutMarginMs NaN or negative is a typed error at creation', async () => {
    const outcomes: string[] = [];
    for (const timeoutMarginMs of [Number.NaN, -5_000]) {
      try {
        makeSqsBatchHandler(async () => 'ok', { store: env.store, timeoutMarginMs });
        outcomes.push(`${timeoutMarginMs}: accepted`);
      } catch (error) {
        outcomes.push(
          `${timeoutMarginMs}: ${error instanceof InvalidInputError ? 'typed' : 'other'}`,
        );
      }
    }
    expect(outcomes).toEqual(['NaN: typed', '-5000: typed']);
  });

  it('SQS: the same record twice in one batch runs once; the copy is a replay, nothing is sent back', async () => {
    const t = tally<SQSRecord>();
    const handler = makeSqsBatchHandler(
      async (record: SQSRecord) => {
        t.bump(record.body);
        return 'ok';
      },
      { store: env.store, onRecord: t.onRecord },
    );
    const record = sqsRecord('dup');
    const event = { Records: [record, { ...record }, sqsRecord('other')] };
    expect(await handler(event, fakeContext(10_000))).toEqual({ batchItemFailures: [] });
    expect(Object.fromEntries(t.runs)).toEqual({ dup: 1, other: 1 });
    expect(t.reports.map((r) => r[1])).toEqual(['processed', 'replayed', 'processed']);
  });

  it('SQS: two concurrent invocations share a record: it runs once, the second sends back only that record, its redelivery replays', async () => {
    const t = tally<SQSRecord>();
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const handler = makeSqsBatchHandler(
      async (record: SQSRecord) => {
        t.bump(record.body);
        if (record.body === 'shared') await gate;
        return 'ok';
      },
      { store: env.store, onRecord: t.onRecord },
    );
    const shared = sqsRecord('shared');
    const first = handler({ Records: [shared] }, fakeContext(10_000));
    await sleep(100);
    // SQS's visibility timeout passed: the record is in another invocation's batch too.
    const second = await handler(
      { Records: [redeliver({ Records: [shared] }).Records[0] as SQSRecord, sqsRecord('b')] },
      fakeContext(10_000),
    );
    expect(second).toEqual({ batchItemFailures: [{ itemIdentifier: shared.messageId }] });
    expect(t.reports.at(-2)?.[2]).toBe('IN_PROGRESS');
    release();
    expect(await first).toEqual({ batchItemFailures: [] });
    expect(await handler({ Records: [shared] }, fakeContext(10_000))).toEqual({
      batchItemFailures: [],
    });
    expect(Object.fromEntries(t.runs)).toEqual({ shared: 1, b: 1 });
    expect(t.reports.at(-1)?.[1]).toBe('replayed');
  });

  it('SQS: a 256 KiB body and a return value over maxOutcomeBytes: processed once, never sent back, never run again', async () => {
    const t = tally<SQSRecord>();
    const handler = makeSqsBatchHandler(
      async (record: SQSRecord) => {
        t.bump(record.messageId);
        return 'r'.repeat(64 * 1024); // over the cap below
      },
      { store: env.store, maxOutcomeBytes: 16 * 1024, onRecord: t.onRecord },
    );
    const event = { Records: [sqsRecord('x'.repeat(256 * 1024)), sqsRecord('small')] };
    expect(await handler(event, fakeContext(10_000))).toEqual({ batchItemFailures: [] });
    expect(await handler(redeliver(event), fakeContext(10_000))).toEqual({
      batchItemFailures: [],
    });
    expect([...t.runs.values()]).toEqual([1, 1]);
    expect(t.reports.slice(0, 2).map((r) => r[1])).toEqual(['processed', 'processed']);
  });

  it('the store stalls while a record’s outcome is written: the batch answers in bounded time, the record is sent back, and its redelivery replays (ran once)', async () => {
    const server = await startPrivateRedis();
    const client = new Redis(server.url, { maxRetriesPerRequest: 1 });
    const admin = new Redis(server.url, { maxRetriesPerRequest: 1 });
    client.on('error', () => {});
    admin.on('error', () => {});
    try {
      const t = tally<SQSRecord>();
      const handler = makeSqsBatchHandler(
        async (record: SQSRecord) => {
          t.bump(record.body);
          // The side effect is done; the store stops answering before the outcome lands.
          if (record.body === 'a' && t.runs.get('a') === 1)
            await admin.call('CLIENT', 'PAUSE', '1500', 'ALL');
          return `done ${record.body}`;
        },
        {
          store: createRedisStore({ client, keyPrefix: 'idem-lambda13-stall:' }),
          storeTimeoutMs: 300,
          onRecord: t.onRecord,
        },
      );
      const event = { Records: [sqsRecord('a'), sqsRecord('b')] };
      const startedAt = performance.now();
      const first = await handler(event, fakeContext(10_000));
      expect(performance.now() - startedAt).toBeLessThan(3_000);
      expect(first.batchItemFailures.map((f) => f.itemIdentifier)).toContain(
        event.Records[0]?.messageId,
      );
      expect(t.runs.get('a')).toBe(1);
      await sleep(2_500); // the pause is over; the completion retried in the background
      const again = await handler(redeliver(event), fakeContext(10_000));
      expect(again).toEqual({ batchItemFailures: [] });
      expect(Object.fromEntries(t.runs)).toEqual({ a: 1, b: 1 });
      expect(t.reports.at(-2)?.[1]).toBe('replayed');
    } finally {
      client.disconnect();
      admin.disconnect();
      await server.stop();
    }
  });

  it('makeIdempotent: an event without a key is a typed error before the handler; a 1 MiB key is hashed and replays', async () => {
    let runs = 0;
    const handler = makeIdempotent(
      async (event: { id?: string }) => {
        runs += 1;
        return { charged: event.id?.length ?? 0 };
      },
      { scope: functionScope, store: env.store, key: (event) => event.id as string },
    );
    for (const event of [{}, { id: '' }])
      await expect(handler(event, fakeContext(5_000))).rejects.toBeInstanceOf(InvalidInputError);
    expect(runs).toBe(0);
    const huge = { id: 'k'.repeat(1024 * 1024) };
    const other = { id: `${'k'.repeat(1024 * 1024 - 1)}j` };
    expect(await handler(huge, fakeContext(5_000))).toEqual({ charged: 1024 * 1024 });
    expect(await handler(huge, fakeContext(5_000))).toEqual({ charged: 1024 * 1024 });
    expect(await handler(other, fakeContext(5_000))).toEqual({ charged: 1024 * 1024 });
    expect(runs).toBe(2);
  });
});
