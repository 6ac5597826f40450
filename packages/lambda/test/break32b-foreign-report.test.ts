// break32b: an `onRecord` listener's rejection is ignored whatever promise it answers. Before
// the fix only this realm's `Promise` was caught: an async listener made in another realm (a
// `vm` context, a sandbox) that rejects left an unhandled rejection per record, which Lambda's
// runtime fails the invocation at (the whole batch comes back).
import vm from 'node:vm';
import type { SQSRecord } from 'aws-lambda';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createMemoryStore } from '../../store-memory/src/index.js';
import { makeSqsBatchHandler } from '../src/index.js';
import { fakeContext, sqsRecord } from './lambda-env.js';

describe('break32b: onRecord answering a foreign promise that rejects', () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  let others: NodeJS.UnhandledRejectionListener[] = [];
  beforeEach(() => {
    unhandled.length = 0;
    others = process.listeners('unhandledRejection');
    process.removeAllListeners('unhandledRejection');
    process.on('unhandledRejection', onUnhandled);
  });
  afterEach(() => {
    process.off('unhandledRejection', onUnhandled);
    for (const listener of others) process.on('unhandledRejection', listener);
  });

  it('no unhandled rejection; the batch is answered', async () => {
    const onRecord = vm.runInContext(
      '(async () => { throw new Error("report broke") })',
      vm.createContext({}),
    );
    const handler = makeSqsBatchHandler(async (record: SQSRecord) => record.body, {
      store: createMemoryStore(),
      onRecord,
    });
    const event = { Records: [sqsRecord('one'), sqsRecord('two')] };
    expect(await handler(event, fakeContext(10_000))).toEqual({ batchItemFailures: [] });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(unhandled).toEqual([]);
  });
});
