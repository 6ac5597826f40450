/**
 * ensureTable() under transient failures (was a product gap seen as a flaky start of
 * apps/llm-api under DynamoDB faults): the first DescribeTable that timed out failed the whole
 * call with StoreUnavailableError, though `timeoutMs` said how long the caller would wait. Now a
 * request that failed for a transient reason (no answer within requestDeadlineMs, a dropped
 * connection, throttling, a 5xx) is sent again every `pollMs` until `timeoutMs` has passed; a
 * refusal (validation, access) fails at once. Each test runs an HTTP proxy in front of
 * DynamoDB Local that fails chosen operations (by X-Amz-Target) a chosen number of times.
 */
import { DeleteTableCommand, DescribeTimeToLiveCommand } from '@aws-sdk/client-dynamodb';
import { InvalidInputError, StoreUnavailableError } from '@idem/core';
import { afterEach, describe, expect, it } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import { makeClient } from './dynamodb-env.js';
import { type OperationFaultProxy, startOperationFaultProxy } from './operation-fault-proxy.js';
import { clients, endpoint, newKey } from './store-fixture.js';

const proxies = new Set<OperationFaultProxy>();
afterEach(async () => {
  for (const proxy of proxies) await proxy.close();
  proxies.clear();
});

/** A store on a new table name behind a new proxy; the SDK retries nothing itself. */
async function setup() {
  const proxy = await startOperationFaultProxy(endpoint);
  proxies.add(proxy);
  const client = makeClient(proxy.endpoint, { maxAttempts: 1 });
  clients.add(client);
  const direct = makeClient(endpoint);
  clients.add(direct);
  const tableName = `ensure-retry-${newKey().slice(0, 12)}`;
  const store = createDynamoDbStore({ client, tableName, requestDeadlineMs: 400 });
  const drop = () => direct.send(new DeleteTableCommand({ TableName: tableName })).catch(() => {});
  return { proxy, store, direct, tableName, drop };
}

describe('DynamoDB store: ensureTable retries transient failures within timeoutMs', () => {
  it('a DescribeTable without an answer, a 500 and throttling are sent again; the table is made', async () => {
    const t = await setup();
    try {
      t.proxy.faults.set('DescribeTable', ['silent', '500', 'throttle']);
      const started = performance.now();
      const result = await t.store.ensureTable({ timeoutMs: 20_000, pollMs: 20 });
      expect(result).toEqual({ created: true, ttlEnabled: true });
      // Three failed DescribeTables, then the one that found no table.
      expect(t.proxy.seen.slice(0, 5)).toEqual([
        'DescribeTable',
        'DescribeTable',
        'DescribeTable',
        'DescribeTable',
        'CreateTable',
      ]);
      // The silent one took the request deadline (400 ms), not the whole timeoutMs.
      expect(performance.now() - started).toBeLessThan(15_000);
    } finally {
      await t.drop();
    }
  });

  it('a refusal (ValidationException) fails at once, typed, with no second try', async () => {
    const t = await setup();
    t.proxy.faults.set('DescribeTable', ['invalid']);
    const error = await t.store
      .ensureTable({ timeoutMs: 60_000, pollMs: 20 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect(((error as StoreUnavailableError).cause as Error).name).toBe('ValidationException');
    expect(t.proxy.seen).toEqual(['DescribeTable']);
  });

  it('a CreateTable whose answer was lost is sent again, finds the table and counts as created', async () => {
    const t = await setup();
    try {
      t.proxy.faults.set('CreateTable', ['lose-answer']);
      const result = await t.store.ensureTable({ timeoutMs: 20_000, pollMs: 20 });
      expect(result).toEqual({ created: true, ttlEnabled: true });
      expect(t.proxy.seen.filter((op) => op === 'CreateTable')).toHaveLength(2);
    } finally {
      await t.drop();
    }
  });

  it('an UpdateTimeToLive whose answer was lost: TTL is looked at again, found on, no error', async () => {
    const t = await setup();
    try {
      t.proxy.faults.set('UpdateTimeToLive', ['lose-answer']);
      const result = await t.store.ensureTable({ timeoutMs: 20_000, pollMs: 20 });
      expect(result).toEqual({ created: true, ttlEnabled: true });
      const ttl = (await t.direct.send(new DescribeTimeToLiveCommand({ TableName: t.tableName })))
        .TimeToLiveDescription;
      expect(ttl).toMatchObject({ TimeToLiveStatus: 'ENABLED', AttributeName: 'ttl' });
      expect(t.proxy.seen.filter((op) => op === 'DescribeTimeToLive').length).toBeGreaterThan(1);
    } finally {
      await t.drop();
    }
  });

  it('failures past timeoutMs end the call with the last one, within timeoutMs + requestDeadlineMs', async () => {
    const t = await setup();
    t.proxy.faults.set(
      'DescribeTable',
      Array.from({ length: 1_000 }, () => '500' as const),
    );
    const started = performance.now();
    const error = await t.store
      .ensureTable({ timeoutMs: 600, pollMs: 20 })
      .catch((e: unknown) => e);
    const ms = performance.now() - started;
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect(((error as StoreUnavailableError).cause as Error).name).toBe('InternalServerError');
    expect(t.proxy.seen.length).toBeGreaterThan(2);
    expect(ms).toBeGreaterThanOrEqual(550);
    expect(ms).toBeLessThan(600 + 400 + 5_000);
  });

  it('timeoutMs 0 sends each request once', async () => {
    const t = await setup();
    t.proxy.faults.set('DescribeTable', ['500']);
    await expect(t.store.ensureTable({ timeoutMs: 0 })).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    expect(t.proxy.seen).toEqual(['DescribeTable']);
  });

  it('a key-schema mismatch is still InvalidInputError after retries', async () => {
    const t = await setup();
    try {
      await t.store.ensureTable({ timeoutMs: 20_000, pollMs: 20 });
      t.proxy.faults.set('DescribeTable', ['500']);
      const single = createDynamoDbStore({
        client: makeClient(t.proxy.endpoint, { maxAttempts: 1 }),
        tableName: t.tableName,
        singleTable: { partitionKeyValue: 'IDEM' },
      });
      await expect(single.ensureTable({ timeoutMs: 20_000, pollMs: 20 })).rejects.toBeInstanceOf(
        InvalidInputError,
      );
    } finally {
      await t.drop();
    }
  });
});
