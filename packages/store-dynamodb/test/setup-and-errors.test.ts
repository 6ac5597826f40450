import { InvalidInputError, StoreUnavailableError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import { makeClient, recordRequests } from './dynamodb-env.js';
import { acquireInput, clients, endpoint, HOUR, newKey, tables } from './store-fixture.js';

describe('DynamoDB store: errors and set-up', () => {
  it('SDK errors become StoreUnavailableError with the cause, on every operation', async () => {
    const client = makeClient(endpoint);
    clients.add(client);
    const store = createDynamoDbStore({ client, tableName: `missing-${newKey().slice(0, 8)}` });
    const key = newKey();
    const w = { key, owner: 'o', retentionMs: HOUR };
    const calls = [
      () => store.acquire(acquireInput(key)),
      () => store.complete({ ...w, outcome: new Uint8Array([1]) }),
      () => store.release(w),
      () => store.extend({ ...w, leaseMs: 1000 }),
      () => store.get(key),
    ];
    for (const call of calls) {
      const error = await call().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreUnavailableError);
      expect((error as StoreUnavailableError).code).toBe('STORE_UNAVAILABLE');
      expect(((error as StoreUnavailableError).cause as Error).name).toBe(
        'ResourceNotFoundException',
      );
    }
    // A network failure (nothing listens on port 9 of the loopback address).
    const down = makeClient('http://127.0.0.1:9', { maxAttempts: 1 });
    clients.add(down);
    const unreachable = createDynamoDbStore({ client: down, tableName: tables.simple });
    const error = await unreachable.acquire(acquireInput(key)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as StoreUnavailableError).cause).toBeInstanceOf(Error);
  });

  it('ensureTable creates an on-demand table with TTL once, and checks an existing one', async () => {
    const { DescribeTableCommand, DescribeTimeToLiveCommand, DeleteTableCommand } = await import(
      '@aws-sdk/client-dynamodb'
    );
    const client = makeClient(endpoint);
    clients.add(client);
    const tableName = `${tables.simple}-ensure`;
    const store = createDynamoDbStore({ client, tableName, attributes: { ttl: 'expiresAtSec' } });
    try {
      expect(await store.ensureTable({ pollMs: 50 })).toEqual({ created: true, ttlEnabled: true });
      expect(await store.ensureTable({ pollMs: 50 })).toEqual({
        created: false,
        ttlEnabled: false,
      });
      const table = (await client.send(new DescribeTableCommand({ TableName: tableName }))).Table!;
      expect(table.KeySchema).toEqual([{ AttributeName: 'pk', KeyType: 'HASH' }]);
      expect(table.BillingModeSummary?.BillingMode).toBe('PAY_PER_REQUEST');
      const ttl = (await client.send(new DescribeTimeToLiveCommand({ TableName: tableName })))
        .TimeToLiveDescription;
      expect(ttl).toMatchObject({ TimeToLiveStatus: 'ENABLED', AttributeName: 'expiresAtSec' });
      // The table's TTL is on another attribute than this store writes.
      await expect(createDynamoDbStore({ client, tableName }).ensureTable()).rejects.toBeInstanceOf(
        InvalidInputError,
      );
      // The key schema does not fit a single-table store.
      await expect(
        createDynamoDbStore({
          client,
          tableName,
          singleTable: { partitionKeyValue: 'IDEM' },
        }).ensureTable(),
      ).rejects.toThrow(/needs pk \(HASH, S\) \+ sk \(RANGE, S\)/);
    } finally {
      await client.send(new DeleteTableCommand({ TableName: tableName }));
    }
  });

  it('rejects bad options at creation, without any request', () => {
    const client = makeClient(endpoint);
    clients.add(client);
    const sent = recordRequests(client);
    expect(() => createDynamoDbStore({ client, tableName: '' })).toThrow(InvalidInputError);
    expect(() =>
      createDynamoDbStore({ client, tableName: 'idem', attributes: { owner: 'status' } }),
    ).toThrow(/distinct/);
    expect(() =>
      createDynamoDbStore({ client, tableName: 'idem', attributes: { fence: 'pk' } }),
    ).toThrow(/distinct/);
    expect(() =>
      createDynamoDbStore({ client, tableName: 'idem', compressAboveBytes: -1 }),
    ).toThrow(InvalidInputError);
    expect(() =>
      createDynamoDbStore({ client, tableName: 'idem', singleTable: { partitionKeyValue: '' } }),
    ).toThrow(InvalidInputError);
    const store = createDynamoDbStore({ client, tableName: 'idem' });
    expect(store.capabilities).toEqual({ clock: 'injectable', maxOutcomeBytes: 4 * 1024 * 1024 });
    const raw = createDynamoDbStore({
      client,
      tableName: 'idem',
      compressAboveBytes: false,
    }).capabilities;
    expect(raw.maxOutcomeBytes).toBeGreaterThan(395 * 1024);
    expect(raw.maxOutcomeBytes).toBeLessThan(400 * 1024);
    expect(sent).toEqual([]);
  });
});
