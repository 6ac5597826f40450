import { StoreUnavailableError } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { startPrivateRedis } from '@idem/test-ledger';
import type { SQSRecord } from 'aws-lambda';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import {
  functionScope,
  makeIdempotent,
  makeSqsBatchHandler,
  type RecordStatus,
} from '../src/index.js';
import { fakeContext, sqsRecord } from './lambda-env.js';

// The store (a private redis-server, killed by its PID) is down during a delivery: nothing
// runs without its key, every record is reported failed (FIFO: the rest not attempted), and
// the redelivery after the store is back runs each record once.
describe('a store outage during an invocation', () => {
  it('batch records fail without running, then run once; makeIdempotent raises StoreUnavailableError', async () => {
    const server = await startPrivateRedis();
    const client = new Redis(server.url, { maxRetriesPerRequest: 1 });
    client.on('error', () => {}); // the outage is the point
    const store = createRedisStore({ client, keyPrefix: 'idem-lambda-outage:' });
    try {
      const runs = new Map<string, number>();
      const statuses: RecordStatus[] = [];
      const handler = makeSqsBatchHandler(
        async (record: SQSRecord) => {
          runs.set(record.body, (runs.get(record.body) ?? 0) + 1);
          return 'ok';
        },
        { store, storeTimeoutMs: 300, onRecord: (r) => statuses.push(r.status) },
      );
      const single = makeIdempotent(async () => 'charged', {
        scope: functionScope,
        store,
        storeTimeoutMs: 300,
        key: () => 'order-1',
      });
      const fifo = { Records: [sqsRecord('f-1', true), sqsRecord('f-2', true)] };
      const standard = { Records: [sqsRecord('s-1'), sqsRecord('s-2')] };
      await server.stop();
      expect((await handler(fifo, fakeContext(10_000))).batchItemFailures).toHaveLength(2);
      expect((await handler(standard, fakeContext(10_000))).batchItemFailures).toHaveLength(2);
      await expect(single({}, fakeContext(10_000))).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(statuses).toEqual(['failed', 'not_attempted', 'failed', 'failed']);
      expect(runs.size).toBe(0);
      await server.start();
      await client.ping(); // reconnected by itself
      for (const event of [fifo, standard, fifo, standard])
        expect(await handler(event, fakeContext(10_000))).toEqual({ batchItemFailures: [] });
      expect(await single({}, fakeContext(10_000))).toBe('charged');
      expect([...runs.values()]).toEqual([1, 1, 1, 1]);
    } finally {
      client.disconnect();
      await server.stop();
    }
  });
});
