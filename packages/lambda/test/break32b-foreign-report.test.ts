// break32b: an `onRecord` listener's rejection is ignored whatever promise it answers. Before
// the fix only this realm's `Promise` was caught: an async listener made in another realm (a
// `vm` context, a sandbox) that rejects left an unhandled rejection per record, which Lambda's
// runtime fails the invocation at (the whole batch comes back).
import vm from 'node:vm';
import { unhandledRejections } from '@idem/test-ledger/unhandled';
import type { SQSRecord } from 'aws-lambda';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createMemoryStore } from '../../store-memory/src/index.js';
import { makeSqsBatchHandler } from '../src/index.js';
import { fakeContext, sqsRecord } from './lambda-env.js';

describe('break32b: onRecord answering a foreign promise that rejects', () => {
  // Only this file's listener, so that the old source's rejections are counted here.
  const rejections = unhandledRejections();
  beforeEach(rejections.start);
  afterEach(rejections.stop);

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
    expect(rejections.seen).toEqual([]);
  });
});
