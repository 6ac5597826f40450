import type { Context, SQSEvent, SQSRecord } from 'aws-lambda';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type ContextWithIdempotency,
  functionScope,
  idempotency,
  isIdemError,
  makeDynamoDbStreamBatchHandler,
  makeIdempotent,
  makeKinesisBatchHandler,
  makeSqsBatchHandler,
} from '../src/index.js';
import { type Env, fakeContext, openEnv, sqsRecord, storeKinds } from './lambda-env.js';
import { describeMiddy, describeMiddyEach } from './middy-versions.js';

// Regression tests of the lamrev fixes, beyond the flipped findings.

const invalidInput = (make: () => unknown): boolean => {
  try {
    make();
  } catch (error) {
    return isIdemError(error) && error.code === 'INVALID_INPUT';
  }
  return false;
};

describeMiddyEach(storeKinds, 'lamfix: Middy early responses on %s', (kind, { middy }) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv(kind);
  });
  afterEach(async () => {
    await env.close();
  });

  it('a later middleware setting request.earlyResponse = undefined releases the key', async () => {
    const fences: number[] = [];
    let skip = true;
    const handler = middy(async (_event: { id: string }, context: Context) => {
      fences.push((context as ContextWithIdempotency<Context>).idempotency?.fence ?? 0);
    })
      .use(
        idempotency({
          scope: functionScope,
          store: env.store,
          key: (event: { id: string }) => event.id,
        }),
      )
      .use({
        before: async (request: { earlyResponse?: unknown }) => {
          // Middy 6's way to answer early with undefined (a warmup short-circuit)
          if (skip) request.earlyResponse = undefined;
        },
      });
    expect(await handler({ id: 'early-u' }, fakeContext(10_000))).toBeUndefined();
    expect(fences).toEqual([]);
    skip = false;
    expect(await handler({ id: 'early-u' }, fakeContext(10_000))).toBeUndefined();
    expect(await handler({ id: 'early-u' }, fakeContext(10_000))).toBeUndefined();
    expect(fences).toHaveLength(1); // ran once (the released key was acquired again), then replayed
  });

  it('a replayed undefined skips the later middlewares and their after', async () => {
    const calls: string[] = [];
    const handler = middy(async (_event: { id: string }) => {
      calls.push('handler');
    })
      .use(
        idempotency({
          scope: functionScope,
          store: env.store,
          key: (event: { id: string }) => event.id,
        }),
      )
      .use({
        before: async () => {
          calls.push('before');
        },
        after: async () => {
          calls.push('after');
        },
      });
    await handler({ id: 'rep-u' }, fakeContext(10_000));
    await handler({ id: 'rep-u' }, fakeContext(10_000));
    expect(calls).toEqual(['before', 'handler', 'after']);
  });
});

describe('lamfix: creation checks (redis)', () => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });

  it('bad options of every wrapper are InvalidInputError at creation', () => {
    const store = env.store;
    const key = () => 'k';
    for (const make of [
      () => makeIdempotent(async () => 1, undefined as never),
      () =>
        makeIdempotent(async () => 1, {
          scope: functionScope,
          store,
          key,
          payload: 'body' as never,
        }),
      () =>
        makeIdempotent(async () => 1, {
          scope: functionScope,
          store,
          key,
          leaseMs: 3_000,
          heartbeatMs: 3_000,
        }),
      () => idempotency({ scope: functionScope, store, key, maxHoldMs: 0 }),
      () => makeSqsBatchHandler(async () => 1, undefined as never),
      () => makeSqsBatchHandler(async () => 1, { store, onRecord: 'log' as never }),
      () => makeSqsBatchHandler(async () => 1, { store, key: 'messageId' as never }),
      () => makeKinesisBatchHandler('handler' as never, { store }),
      () => makeDynamoDbStreamBatchHandler(async () => 1, { store, leaseMs: -1 }),
    ])
      expect(invalidInput(make)).toBe(true);
    // still accepted
    expect(invalidInput(() => makeSqsBatchHandler(async () => 1, { store, payload: false }))).toBe(
      false,
    );
  });

  it('a lease longer than the time left is still capped (valid values are clamped)', async () => {
    let runs = 0;
    const handler = makeSqsBatchHandler(
      async (record: SQSRecord) => {
        runs += 1;
        return record.messageId;
      },
      { store: env.store, leaseMs: 60_000, maxHoldMs: 7_200_000 },
    );
    const event: SQSEvent = { Records: [sqsRecord('{"id":"x"}')] };
    expect((await handler(event, fakeContext(5_000))).batchItemFailures).toEqual([]);
    expect((await handler(event, fakeContext(5_000))).batchItemFailures).toEqual([]);
    expect(runs).toBe(1);
  });
});

describeMiddy('lamfix: two idempotency() middlewares (redis)', ({ middy }) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });

  it('an early response releases the keys of both', async () => {
    let runs = 0;
    let early = true;
    const handler = middy(async (_event: { id: string }) => {
      runs += 1;
      return 'ran';
    })
      .use(
        idempotency({
          scope: functionScope,
          store: env.store,
          key: (event: { id: string }) => `a-${event.id}`,
        }),
      )
      .use(
        idempotency({
          scope: functionScope,
          store: env.store,
          key: (event: { id: string }) => `b-${event.id}`,
        }),
      )
      .use({ before: async () => (early ? 'early' : undefined) });
    expect(await handler({ id: 'two' }, fakeContext(10_000))).toBe('early');
    early = false;
    expect(await handler({ id: 'two' }, fakeContext(10_000))).toBe('ran');
    expect(await handler({ id: 'two' }, fakeContext(10_000))).toBe('ran');
    expect(runs).toBe(1);
  });
});
