import { InvalidInputError } from '@idem/core';
import type { Context, SQSRecord } from 'aws-lambda';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { functionScope, makeIdempotent, makeSqsBatchHandler } from '../src/index.js';
import {
  type Env,
  fakeContext,
  openEnv,
  redeliver,
  type SQSEvent,
  sqsRecord,
} from './lambda-env.js';

// Adversarial review (polrev) of the outcome policy after 9528cec8 (core records a success
// whose policy throws), through the Lambda wrappers on Redis.

describe('outcome policy faults through the Lambda wrappers', () => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });

  it('makeIdempotent, a policy that throws of a success: the invocation fails with its error, the retry replays, the handler ran once', async () => {
    let runs = 0;
    let calls = 0;
    const handler = makeIdempotent(
      async (event: { id: string }) => {
        runs++;
        return { shipped: event.id };
      },
      {
        scope: functionScope,
        store: env.store,
        key: (event) => event.id,
        isFinal: () => {
          calls++;
          if (calls === 1) throw new Error('policy bug');
          return true;
        },
      },
    );
    await expect(handler({ id: 'o-1' }, fakeContext(10_000))).rejects.toThrow('policy bug');
    expect(await handler({ id: 'o-1' }, fakeContext(10_000))).toEqual({ shipped: 'o-1' });
    expect(runs).toBe(1);
  });

  it('an async isFinal is refused when the handler is wrapped', () => {
    expect(() =>
      makeSqsBatchHandler(async () => 'ok', {
        store: env.store,
        isFinal: (async () => true) as never,
      }),
    ).toThrow(InvalidInputError);
  });

  // FINDING (MEDIUM, fixed in core): a Promise is truthy, so a failed record was recorded as
  // final: its redelivery was "replayed as done" and the record never ran again.
  it('SQS batch, a policy answering a Promise: a failed record is redelivered and runs again; a success runs once', async () => {
    const runs = new Map<string, number>();
    const handler = makeSqsBatchHandler(
      async (record: SQSRecord, _ctx: Context) => {
        const n = (runs.get(record.body) ?? 0) + 1;
        runs.set(record.body, n);
        if (record.body === 'flaky' && n === 1) throw new Error('payment service down');
        return { shipped: record.body };
      },
      {
        store: env.store,
        isFinal: ((settled: { ok: boolean }) => Promise.resolve(settled.ok)) as never,
      },
    );
    const event: SQSEvent = { Records: [sqsRecord('flaky'), sqsRecord('steady')] };
    const first = await handler(event, fakeContext(10_000));
    // The failure released and sent back; the success recorded with the policy's fault, and
    // (since mutcl) reported processed, not sent back: its redelivery only replayed.
    expect(first.batchItemFailures).toEqual([{ itemIdentifier: event.Records[0]?.messageId }]);
    const second = await handler(redeliver(event), fakeContext(10_000));
    expect(second.batchItemFailures).toEqual([]);
    expect(Object.fromEntries(runs)).toEqual({ flaky: 2, steady: 1 });
  });
});
