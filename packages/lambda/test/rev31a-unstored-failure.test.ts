// rev31a (review of client31, same defect as @idem/consumers): a batch record whose handler
// failure the policy keeps (`everythingFinal`) but the engine cannot store is reported
// `processed` (dropped from the queue) because a not-recorded marker stands for it. When that
// marker's own write was refused (the owner-checked write answers `not_owner`: the key was
// taken over) the engine threw the same OUTCOME_NOT_RECORDED, and the record was deleted with
// nothing recorded. It is now a batch item failure (redelivered), as any failed final write;
// a marker that landed is still `processed`.
import { everythingFinal, type IdempotencyStore } from '@idem/core';
import { refusingCompletes } from '@idem/test-ledger';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeSqsBatchHandler, type RecordStatus } from '../src/index.js';
import { type Env, fakeContext, openEnv, sqsRecord } from './lambda-env.js';

describe('rev31a: a kept failure that cannot be stored, in a batch', () => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });

  const run = async (store: IdempotencyStore, body: string) => {
    let runs = 0;
    const reports: [RecordStatus, unknown][] = [];
    const handler = makeSqsBatchHandler(
      async () => {
        runs++;
        throw Object.create(null);
      },
      { store, isFinal: everythingFinal, onRecord: (r) => reports.push([r.status, r.error]) },
    );
    const record = sqsRecord(body);
    const answer = await handler({ Records: [record] }, fakeContext(10_000));
    return { answer, reports, runs, id: record.messageId };
  };

  it('the marker write refused (not owner): a batch item failure, not processed', async () => {
    const store = refusingCompletes(env.store);
    const { answer, reports, runs, id } = await run(store, 'rev31a-refused');
    expect(runs).toBe(1);
    expect(answer.batchItemFailures).toEqual([{ itemIdentifier: id }]);
    expect(reports.map(([status]) => status)).toEqual(['failed']);
  });

  it('the marker written: processed, not redelivered', async () => {
    const { answer, reports, runs } = await run(env.store, 'rev31a-written');
    expect(runs).toBe(1);
    expect(answer.batchItemFailures).toEqual([]);
    expect(reports.map(([status]) => status)).toEqual(['processed']);
    expect(reports[0]?.[1]).toMatchObject({ code: 'OUTCOME_NOT_RECORDED' });
  });
});
