import {
  CreateTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  type DynamoDBClient,
  type TableDescription,
  UpdateTimeToLiveCommand,
} from '@aws-sdk/client-dynamodb';
import { checkDuration, InvalidInputError, toStoreError } from '@idem/core';
import type { ItemSchema } from './record-item.js';
import { DYNAMODB_ERRORS, isNamed } from './sdk-errors.js';

/** Options of `ensureTable()`. */
export interface EnsureTableOptions {
  /**
   * Longest wait for a new table to become ACTIVE, in ms (each request of ensureTable is
   * bounded apart from it by the store's `requestDeadlineMs`). A non-negative number.
   * @default 120_000
   */
  timeoutMs?: number;
  /** Poll interval while waiting, in ms: 1 to 2_147_483_647. @default 500 */
  pollMs?: number;
}

/** What `ensureTable()` did. */
export interface EnsureTableResult {
  /** True when the table did not exist and was created. */
  created: boolean;
  /** True when TTL was off and has been turned on for the `ttl` attribute. */
  ttlEnabled: boolean;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function keySchemaOf(
  schema: ItemSchema,
): Array<{ AttributeName: string; KeyType: 'HASH' | 'RANGE' }> {
  const { partitionKey, single } = schema.layout;
  return single
    ? [
        { AttributeName: partitionKey, KeyType: 'HASH' },
        { AttributeName: single.sortKey, KeyType: 'RANGE' },
      ]
    : [{ AttributeName: partitionKey, KeyType: 'HASH' }];
}

function checkKeySchema(tableName: string, table: TableDescription, schema: ItemSchema): void {
  const expected = keySchemaOf(schema);
  const actual = table.KeySchema ?? [];
  const types = new Map(
    (table.AttributeDefinitions ?? []).map((d) => [d.AttributeName, d.AttributeType]),
  );
  const same =
    actual.length === expected.length &&
    expected.every(
      (e) =>
        actual.some((a) => a.AttributeName === e.AttributeName && a.KeyType === e.KeyType) &&
        types.get(e.AttributeName) === 'S',
    );
  if (!same) {
    const want = expected.map((e) => `${e.AttributeName} (${e.KeyType}, S)`).join(' + ');
    const have = actual
      .map((a) => `${a.AttributeName} (${a.KeyType}, ${types.get(a.AttributeName ?? '')})`)
      .join(' + ');
    throw new InvalidInputError(`Table ${tableName} has key ${have}; this store needs ${want}`);
  }
}

/** Longest timer Node keeps (a longer sleep would fire at once: a tight polling loop). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Options of one request: aborted past the store's `requestDeadlineMs`, as every other. */
const bounded = (deadlineMs: number) => ({ abortSignal: AbortSignal.timeout(deadlineMs) });

async function describe(
  client: DynamoDBClient,
  tableName: string,
  deadlineMs: number,
): Promise<TableDescription | undefined> {
  try {
    return (
      await client.send(new DescribeTableCommand({ TableName: tableName }), bounded(deadlineMs))
    ).Table;
  } catch (error) {
    if (isNamed(error, 'ResourceNotFoundException')) return undefined;
    throw toStoreError(DYNAMODB_ERRORS, 'DescribeTable', error);
  }
}

/**
 * Creates the table if it is missing (on-demand billing, the store's key schema), waits
 * until it is ACTIVE, checks the key schema of an existing table, and enables TTL on the
 * `ttl` attribute (epoch seconds). TTL only removes expired items eventually; expiry itself
 * is decided by the store's conditions.
 */
export async function ensureTable(
  client: DynamoDBClient,
  tableName: string,
  schema: ItemSchema,
  options: EnsureTableOptions = {},
  requestDeadlineMs = 5_000,
): Promise<EnsureTableResult> {
  // Checked before any request: NaN would poll for ever, 0 or a huge value in a tight loop.
  const timeoutMs = checkDuration('timeoutMs', options.timeoutMs ?? 120_000);
  const pollMs = checkDuration('pollMs', options.pollMs ?? 500, MAX_TIMER_MS);
  if (pollMs < 1) throw new InvalidInputError('pollMs must be at least 1 ms');
  let table = await describe(client, tableName, requestDeadlineMs);
  let created = false;
  if (!table) {
    const keySchema = keySchemaOf(schema);
    try {
      await client.send(
        new CreateTableCommand({
          TableName: tableName,
          BillingMode: 'PAY_PER_REQUEST',
          KeySchema: keySchema,
          AttributeDefinitions: keySchema.map((k) => ({
            AttributeName: k.AttributeName,
            AttributeType: 'S',
          })),
        }),
        bounded(requestDeadlineMs),
      );
      created = true;
    } catch (error) {
      // Another process created it first: fine, wait for it like for our own.
      if (!isNamed(error, 'ResourceInUseException'))
        throw toStoreError(DYNAMODB_ERRORS, 'CreateTable', error);
    }
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    table = await describe(client, tableName, requestDeadlineMs);
    if (table?.TableStatus === 'ACTIVE') break;
    if (Date.now() >= deadline) {
      throw toStoreError(
        DYNAMODB_ERRORS,
        'ensureTable',
        new Error(`Table ${tableName} is not ACTIVE after ${timeoutMs} ms`),
      );
    }
    await sleep(pollMs);
  }
  checkKeySchema(tableName, table, schema);

  const ttlName = schema.names.ttl;
  let ttl: { TimeToLiveStatus?: string; AttributeName?: string } | undefined;
  try {
    ttl = (
      await client.send(
        new DescribeTimeToLiveCommand({ TableName: tableName }),
        bounded(requestDeadlineMs),
      )
    ).TimeToLiveDescription;
  } catch (error) {
    throw toStoreError(DYNAMODB_ERRORS, 'DescribeTimeToLive', error);
  }
  const status = ttl?.TimeToLiveStatus ?? 'DISABLED';
  if (status === 'ENABLED' || status === 'ENABLING') {
    if (ttl?.AttributeName !== ttlName) {
      throw new InvalidInputError(
        `Table ${tableName} has TTL on attribute ${ttl?.AttributeName}; set the store's attributes.ttl to it, or move the table's TTL to ${ttlName}`,
      );
    }
    return { created, ttlEnabled: false };
  }
  if (status === 'DISABLING') {
    throw new InvalidInputError(
      `Table ${tableName} is disabling TTL; run ensureTable() again once that has finished`,
    );
  }
  try {
    await client.send(
      new UpdateTimeToLiveCommand({
        TableName: tableName,
        TimeToLiveSpecification: { AttributeName: ttlName, Enabled: true },
      }),
      bounded(requestDeadlineMs),
    );
  } catch (error) {
    throw toStoreError(DYNAMODB_ERRORS, 'UpdateTimeToLive', error);
  }
  return { created, ttlEnabled: true };
}
