import { InvalidInputError } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { expect, it } from 'vitest';
import {
  makeDynamoDbStreamBatchHandler,
  makeKinesisBatchHandler,
  makeSqsBatchHandler,
} from '../src/index.js';
import { fakeContext } from './lambda-env.js';

// rev32c FINDING (LOW-MEDIUM, an event lost without a trace; fixed): the README says "A
// batch without a `Records` array [...] fails whole with `InvalidInputError` before any
// record runs", and `{ Records: 'abc' }` did, but an event with no `Records` at all (an
// EventBridge or SNS-less direct invocation routed to a batch handler, `{}`, `null`) answered
// `{ batchItemFailures: [] }`: a success, nothing run, so Lambda neither retried it nor sent
// it to an on-failure destination. An empty `Records` array is still an empty batch.

it('a batch handler given an event without a Records array fails whole with InvalidInputError', async () => {
  const store = createMemoryStore();
  let runs = 0;
  const handlers = [
    makeSqsBatchHandler(async () => ++runs, { store }),
    makeKinesisBatchHandler(async () => ++runs, { store }),
    makeDynamoDbStreamBatchHandler(async () => ++runs, { store }),
  ];
  const ctx = fakeContext(5_000);
  for (const handler of handlers) {
    for (const event of [{}, { Records: null }, { detail: { id: 1 } }, null, undefined, 5]) {
      await expect(handler(event as never, ctx)).rejects.toBeInstanceOf(InvalidInputError);
    }
    expect(await handler({ Records: [] }, ctx)).toEqual({ batchItemFailures: [] });
  }
  expect(runs).toBe(0);
});
