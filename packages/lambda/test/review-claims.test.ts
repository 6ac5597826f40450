import { setTimeout as sleep } from 'node:timers/promises';
import type { Context, SQSRecord } from 'aws-lambda';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  functionScope,
  InProgressError,
  idempotency,
  makeIdempotent,
  makeSqsBatchHandler,
} from '../src/index.js';
import { type Env, fakeContext, openEnv, sqsRecord } from './lambda-env.js';
import { middies } from './middy-versions.js';

// README claims that had no test: the default scope isolates functions sharing a store and a
// key; heartbeats keep a short lease alive under a handler that outlives it.
describe('README claims', () => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });

  it.each(middies)(
    'two functions sharing a store and a key never see each other’s outcomes (default scope) [Middy $major]',
    async ({ middy }) => {
      const runs: string[] = [];
      const wrap = () =>
        makeIdempotent(
          async (_event: unknown, context: Context) => {
            runs.push(context.functionName);
            return context.functionName;
          },
          { scope: functionScope, store: env.store, key: () => 'order-42' },
        );
      const billing = wrap();
      const shipping = wrap();
      expect(await billing({}, fakeContext(5_000, 'billing'))).toBe('billing');
      expect(await shipping({}, fakeContext(5_000, 'shipping'))).toBe('shipping');
      expect(await shipping({}, fakeContext(5_000, 'shipping'))).toBe('shipping'); // a replay
      const middyFn = middy(async (_e: unknown, c: Context) => {
        runs.push(`middy:${c.functionName}`);
        return c.functionName;
      }).use(idempotency({ scope: functionScope, store: env.store, key: () => 'order-42' }));
      expect(await middyFn({}, fakeContext(5_000, 'audit'))).toBe('audit');
      const batch = makeSqsBatchHandler(
        async (_r: SQSRecord, c: Context) => {
          runs.push(`batch:${c.functionName}`);
          return 1;
        },
        { store: env.store },
      );
      const record = sqsRecord('shared');
      for (const fn of ['queue-a', 'queue-b'])
        expect(await batch({ Records: [record] }, fakeContext(5_000, fn))).toEqual({
          batchItemFailures: [],
        });
      expect(runs).toEqual([
        'billing',
        'shipping',
        'middy:audit',
        'batch:queue-a',
        'batch:queue-b',
      ]);
    },
  );

  it('heartbeats keep a short lease while the handler outlives it: a duplicate meanwhile is InProgressError', async () => {
    let runs = 0;
    const handler = makeIdempotent(
      async () => {
        runs += 1;
        await sleep(1_800);
        return 'done';
      },
      { scope: functionScope, store: env.store, key: () => 'long-job', leaseMs: 600 },
    );
    const first = handler({}, fakeContext(30_000));
    await sleep(1_200); // two leases later; only heartbeats keep the key
    await expect(handler({}, fakeContext(30_000))).rejects.toBeInstanceOf(InProgressError);
    expect(await first).toBe('done');
    expect(await handler({}, fakeContext(30_000))).toBe('done');
    expect(runs).toBe(1);
  });
});
