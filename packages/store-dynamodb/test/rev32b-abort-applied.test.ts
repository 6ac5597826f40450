/**
 * rev32b: core cuts a DynamoDB request when its `storeTimeoutMs` passes (the call's signal),
 * but a request already written to the socket of a frozen DynamoDB Local is read and applied
 * when the service resumes: a conditional write that succeeded with its answer cut. For the
 * completion that is the case that matters: the record is completed while core was told
 * nothing. Here the service (a DynamoDB Local this file owns, SIGSTOPped by PID) freezes as the
 * operation returns, so every completion attempt is aborted until it resumes; then the
 * execution's caller has its typed error, the key is never run twice, every retry replays the
 * first outcome, and the item holds it (read raw).
 */
import { randomBytes } from 'node:crypto';
import { ScanCommand } from '@aws-sdk/client-dynamodb';
import { createIdempotency, IdemError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { ownDynamoDbStore } from './own-dynamodb.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const external = Boolean(process.env.DYNAMODB_ENDPOINT);

describe.skipIf(external)('a DynamoDB Local frozen at the completion', () => {
  const own = ownDynamoDbStore('idem-rev32b');

  it('a completion cut by the signal but applied on resume: one run, every retry replays it', async () => {
    const { service, client, store } = own;
    const idem = createIdempotency<string>({
      store,
      storeTimeoutMs: 400,
      completionWaitMs: 300,
      leaseMs: 15_000,
    });
    const key = randomBytes(8).toString('hex');
    let runs = 0;
    let thawed: Promise<void> | undefined;
    const op = async () => {
      const run = ++runs;
      if (run === 1) {
        await service.signal('SIGSTOP');
        thawed = sleep(2_500).then(() => service.signal('SIGCONT'));
      }
      return `v${run}`;
    };
    const first = await idem.execute({ key, scope: 's' }, op).catch((e: unknown) => e);
    expect(first).toBeInstanceOf(IdemError);
    expect((first as IdemError).code).toBe('STORE_UNAVAILABLE');
    await thawed;
    let last: unknown;
    for (let i = 0; i < 100; i++) {
      last = await idem.execute({ key, scope: 's' }, op).catch((e: unknown) => e);
      if (!(last instanceof Error)) break;
      await sleep(100);
    }
    await idem.drain(10_000);
    expect(last).toEqual({ value: 'v1', replayed: true });
    expect(runs).toBe(1);
    // Through a second channel: the table's only item is the completed record.
    const { Items } = await client.send(new ScanCommand({ TableName: 'idem-rev32b' }));
    expect(Items).toHaveLength(1);
    expect(JSON.stringify(Items?.[0])).toContain('"completed"');
  }, 60_000);
});
