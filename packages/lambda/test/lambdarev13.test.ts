import {
  createIdempotency,
  type IdempotencyStore,
  InvalidInputError,
  isIdemError,
  type JsonValue,
  MismatchError,
  StoreUnavailableError,
} from '@idem/core';
import type { KinesisStreamRecord } from 'aws-lambda';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeKinesisBatchHandler, type RecordReport, type RecordStatus } from '../src/index.js';
import { type Env, fakeContext, kinesisRecord, openEnv } from './lambda-env.js';

// Adversarial review of the rev-13 fixes: can a `rejected` Kinesis record be a transient
// failure that is dropped (never sent back) and so lost?
describe('lambda rev13 attacks', () => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });
  const tally = () => {
    const reports: [string, RecordStatus, string?][] = [];
    return {
      reports,
      onRecord: (r: RecordReport<KinesisStreamRecord>) =>
        reports.push([
          r.itemIdentifier,
          r.status,
          ...(isIdemError(r.error) ? [r.error.code] : []),
        ] as [string, RecordStatus, string?]),
    };
  };
  const dataOf = (r: KinesisStreamRecord) => Buffer.from(r.kinesis.data, 'base64').toString();
  // undefined when the record has no orderId: what a key function that finds no key gives.
  const keyOf = (r: KinesisStreamRecord) =>
    (JSON.parse(dataOf(r)) as { orderId?: string }).orderId as JsonValue;

  // FINDING (HIGH; fixed: what the handler threw is never the verdict): an error thrown by the user's handler is classified by its `code` only: a
  // handler whose own dependency throws an idem InvalidInputError / MismatchError (a nested
  // idem engine, the idem HTTP client's 422, a transient misconfiguration read at run time)
  // is taken for a permanent key/fingerprint refusal of this record, reported `rejected` and
  // left out of batchItemFailures: the record is never redelivered, though the handler failed
  // and nothing was recorded (the key was released). The message is lost. isPermanent must
  // only see errors the engine raised before the handler ran (e.g. tag them, or check that the
  // handler did not run).
  it('Kinesis: a handler that throws an idem error once is retried, not dropped', async () => {
    let calls = 0;
    const t = tally();
    const handler = makeKinesisBatchHandler(
      async () => {
        calls += 1;
        // e.g. a nested idempotent call to a downstream that refused the body this time
        if (calls === 1) throw new MismatchError();
        return 'ok';
      },
      { store: env.store, key: keyOf, onRecord: t.onRecord },
    );
    const record = kinesisRecord('{"orderId":"h-1"}');
    const first = await handler({ Records: [record] }, fakeContext(30_000));
    // the handler failed: the record must go back to Kinesis
    expect(t.reports[0]?.[1]).toBe('failed');
    expect(first.batchItemFailures).toEqual([{ itemIdentifier: record.kinesis.sequenceNumber }]);
  });

  it('Kinesis: a handler that throws InvalidInputError once is retried, not dropped', async () => {
    const t = tally();
    // a nested engine built from a config read at run time (a transient bad value)
    const handler = makeKinesisBatchHandler(
      async () => {
        createIdempotency({ store: env.store, leaseMs: Number.NaN });
        return 'ok';
      },
      { store: env.store, key: keyOf, onRecord: t.onRecord },
    );
    const record = kinesisRecord('{"orderId":"h-2"}');
    const first = await handler({ Records: [record] }, fakeContext(30_000));
    expect(t.reports[0]?.[1]).toBe('failed');
    expect(first.batchItemFailures).toHaveLength(1);
  });

  // FINDING (MEDIUM; fixed): a key (or payload / scope) function that throws is rejected whatever it
  // threw: one that looks the key up (a schema registry, a decryption call, a cache) and hits
  // a transient network error drops the record for good instead of sending it back. Only
  // "no key" / InvalidInputError-like verdicts are the same at every delivery; an arbitrary
  // thrown error should be `failed` (or the rejection made opt-in / limited to IdemErrors).
  it('Kinesis: a key function that throws a transient error sends the record back', async () => {
    let lookups = 0;
    const t = tally();
    const handler = makeKinesisBatchHandler(async () => 'ok', {
      store: env.store,
      key: (r) => {
        lookups += 1;
        if (lookups === 1)
          throw Object.assign(new Error('connect ECONNRESET'), { code: 'ECONNRESET' });
        return keyOf(r);
      },
      onRecord: t.onRecord,
    });
    const record = kinesisRecord('{"orderId":"k-1"}');
    const first = await handler({ Records: [record] }, fakeContext(30_000));
    expect(first.batchItemFailures).toHaveLength(1);
  });

  it('Kinesis: a store outage is failed and sent back, not rejected', async () => {
    const t = tally();
    const down: IdempotencyStore = {
      ...env.store,
      capabilities: env.store.capabilities,
      acquire: async () => {
        throw new StoreUnavailableError('down');
      },
      complete: env.store.complete.bind(env.store),
      release: env.store.release.bind(env.store),
      extend: env.store.extend.bind(env.store),
    } as IdempotencyStore;
    let ran = 0;
    const handler = makeKinesisBatchHandler(
      async () => {
        ran += 1;
        return 'ok';
      },
      { store: down, key: keyOf, onRecord: t.onRecord, storeTimeoutMs: 200 },
    );
    const a = kinesisRecord('{"orderId":"s-1"}');
    const b = kinesisRecord('{"orderId":"s-2"}');
    const res = await handler({ Records: [a, b] }, fakeContext(30_000));
    expect(ran).toBe(0);
    expect(t.reports.map((r) => r[1])).toEqual(['failed', 'not_attempted']);
    expect(res.batchItemFailures).toHaveLength(2);
  });

  it('Kinesis: a store that throws a plain error (or a store-side InvalidInputError-free timeout) is failed', async () => {
    const t = tally();
    const broken = {
      ...env.store,
      capabilities: env.store.capabilities,
      acquire: () => new Promise(() => {}), // never answers
      complete: env.store.complete.bind(env.store),
      release: env.store.release.bind(env.store),
      extend: env.store.extend.bind(env.store),
    } as IdempotencyStore;
    const handler = makeKinesisBatchHandler(async () => 'ok', {
      store: broken,
      key: keyOf,
      onRecord: t.onRecord,
      storeTimeoutMs: 100,
    });
    const a = kinesisRecord('{"orderId":"s-3"}');
    const res = await handler({ Records: [a] }, fakeContext(30_000));
    expect(t.reports[0]?.[1]).not.toBe('rejected');
    expect(res.batchItemFailures).toHaveLength(1);
  });

  it('Kinesis: a plain handler error is failed and the redelivery runs exactly once more', async () => {
    let runs = 0;
    const t = tally();
    const handler = makeKinesisBatchHandler(
      async () => {
        runs += 1;
        if (runs === 1) throw new Error('boom');
        return 'ok';
      },
      { store: env.store, key: keyOf, onRecord: t.onRecord },
    );
    const record = kinesisRecord('{"orderId":"p-1"}');
    const first = await handler({ Records: [record] }, fakeContext(30_000));
    expect(first.batchItemFailures).toHaveLength(1);
    const second = await handler({ Records: [record] }, fakeContext(30_000));
    const third = await handler({ Records: [record] }, fakeContext(30_000));
    expect(second.batchItemFailures).toHaveLength(0);
    expect(third.batchItemFailures).toHaveLength(0);
    expect(runs).toBe(2);
    expect(t.reports.map((r) => r[1])).toEqual(['failed', 'processed', 'replayed']);
  });

  it('Kinesis: a record past the deadline is timed_out / not_attempted, never rejected', async () => {
    const t = tally();
    const handler = makeKinesisBatchHandler(
      async () => new Promise((resolve) => setTimeout(() => resolve('late'), 400)),
      { store: env.store, key: keyOf, onRecord: t.onRecord, timeoutMarginMs: 50 },
    );
    const a = kinesisRecord('{"orderId":"t-1"}');
    const b = kinesisRecord('{"orderId":"t-2"}');
    const res = await handler({ Records: [a, b] }, fakeContext(200));
    expect(t.reports.map((r) => r[1])).toEqual(['timed_out', 'not_attempted']);
    expect(res.batchItemFailures).toHaveLength(2);
    await new Promise((r) => setTimeout(r, 400));
  });

  it('Kinesis: a mismatch is rejected but the recorded outcome stays and replays', async () => {
    let runs = 0;
    const t = tally();
    const handler = makeKinesisBatchHandler(
      async () => {
        runs += 1;
        return 'ok';
      },
      { store: env.store, key: keyOf, onRecord: t.onRecord },
    );
    const a = kinesisRecord('{"orderId":"m-1","v":1}');
    const b = kinesisRecord('{"orderId":"m-1","v":2}');
    const res = await handler({ Records: [a, b, a] }, fakeContext(30_000));
    expect(res.batchItemFailures).toEqual([]);
    expect(t.reports.map((r) => r[1])).toEqual(['processed', 'rejected', 'replayed']);
    expect(runs).toBe(1);
  });

  it('timeoutMarginMs rejects NaN, Infinity and negatives', () => {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, -1])
      expect(() =>
        makeKinesisBatchHandler(async () => 'ok', { store: env.store, timeoutMarginMs: bad }),
      ).toThrow(InvalidInputError);
  });
});
