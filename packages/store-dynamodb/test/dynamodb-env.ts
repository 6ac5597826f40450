import { Agent } from 'node:http';
import { gunzipSync } from 'node:zlib';
import { type AttributeValue, DynamoDBClient, GetItemCommand } from '@aws-sdk/client-dynamodb';
import type { Clock, IdempotencyStore, RecordStatus, StoredRecord } from '@idem/core';
import {
  type DynamoDbStoreOptions,
  type RecommendedDynamoDbClientInput,
  type RecordAttributeNames,
  recommendedDynamoDbClientConfig,
} from '../src/index.js';

/** Table names of one test run, per layout. */
export interface TableNames {
  simple: string;
  single: string;
}

/** A table layout the tests run against. */
export interface Layout {
  id: keyof TableNames;
  name: string;
  options: Omit<DynamoDbStoreOptions, 'client' | 'tableName'>;
  /** The raw primary key of a prefixed storage key, built here rather than by the adapter. */
  rawKey(prefixedKey: string): Record<string, AttributeValue>;
  /** Attribute names as the layout configures them. */
  names: RecordAttributeNames;
}

const defaultNames = {
  status: 'status',
  fingerprint: 'fingerprint',
  owner: 'owner',
  origin: 'origin',
  fence: 'fence',
  leaseUntil: 'leaseUntil',
  expiresAt: 'expiresAt',
  outcome: 'outcome',
  outcomeEncoding: 'outcomeEncoding',
  ttl: 'ttl',
};

const customNames = {
  status: 'idemStatus',
  fingerprint: 'idemFp',
  owner: 'idemOwner',
  origin: 'idemOrigin',
  fence: 'idemFence',
  leaseUntil: 'idemLease',
  expiresAt: 'idemExpires',
  outcome: 'idemBody',
  outcomeEncoding: 'idemBodyEnc',
  ttl: 'expireAtSec',
};

/** Both layouts: a table of its own (defaults), and single-table with custom names. */
export const layouts: Layout[] = [
  {
    id: 'simple',
    name: 'own table, storage key as partition key',
    options: {},
    rawKey: (k) => ({ pk: { S: k } }),
    names: defaultNames,
  },
  {
    id: 'single',
    name: 'single table, static partition key + sort key, custom attribute names',
    options: {
      partitionKey: 'PK',
      singleTable: { partitionKeyValue: 'IDEM', sortKey: 'SK' },
      attributes: customNames,
    },
    rawKey: (k) => ({ PK: { S: 'IDEM' }, SK: { S: k } }),
    names: customNames,
  },
];

/**
 * A client for DynamoDB Local with dummy credentials, bounded like production clients
 * (recommendedDynamoDbClientConfig) but with room for an emulator on a loaded machine:
 * 10 s per attempt, 3 attempts, unless `bounds` says otherwise. `serial` keeps one
 * connection, so requests reach the service and their answers come back in the order they
 * were sent.
 */
export function makeClient(
  endpoint: string,
  extra: { maxAttempts?: number; serial?: boolean; bounds?: RecommendedDynamoDbClientInput } = {},
): DynamoDBClient {
  const bounded = recommendedDynamoDbClientConfig(
    extra.bounds ?? { requestTimeoutMs: 10_000, maxAttempts: 3 },
  );
  return new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'idemlocal', secretAccessKey: 'idemlocal' },
    maxAttempts: extra.maxAttempts ?? bounded.maxAttempts,
    requestHandler: {
      ...(bounded.requestHandler as Record<string, unknown>),
      ...(extra.serial ? { httpAgent: new Agent({ keepAlive: true, maxSockets: 1 }) } : {}),
    },
  });
}

/** One HTTP request the client sent (every attempt counts, retries included). */
export interface SentRequest {
  command: string;
  input: Record<string, unknown>;
}

/** Records every request the client sends, at the deserialize step (once per attempt). */
export function recordRequests(client: DynamoDBClient): SentRequest[] {
  const sent: SentRequest[] = [];
  client.middlewareStack.add(
    (next, context) => async (args) => {
      sent.push({
        command: String(context.commandName),
        input: args.input as Record<string, unknown>,
      });
      return next(args);
    },
    { step: 'deserialize', name: 'idemRecordRequests' },
  );
  return sent;
}

/** The raw item, by a plain GetItem with a key built here. */
export async function rawItem(
  client: DynamoDBClient,
  tableName: string,
  layout: Layout,
  prefixedKey: string,
): Promise<Record<string, AttributeValue> | undefined> {
  const output = await client.send(
    new GetItemCommand({
      TableName: tableName,
      Key: layout.rawKey(prefixedKey),
      ConsistentRead: true,
    }),
  );
  return output.Item;
}

/** Decodes a raw item to the contract's shape, independently of the adapter's decoder. */
export function decodeRaw(layout: Layout, item: Record<string, AttributeValue>): StoredRecord {
  const n = layout.names;
  const record: StoredRecord = {
    status: item[n.status]?.S as RecordStatus,
    fingerprint: item[n.fingerprint]?.S as string,
    owner: item[n.owner]?.S as string,
    fence: Number(item[n.fence]?.N),
    leaseUntil: Number(item[n.leaseUntil]?.N),
    expiresAt: Number(item[n.expiresAt]?.N),
  };
  const origin = item[n.origin]?.S;
  if (origin !== undefined) record.origin = origin;
  const body = item[n.outcome]?.B;
  if (body) {
    const encoding = item[n.outcomeEncoding]?.S;
    record.outcome = encoding === 'gzip' ? new Uint8Array(gunzipSync(body)) : new Uint8Array(body);
  }
  return record;
}

/** What the conformance suite's `rawRead` needs to know about a store it created. */
export interface StoreContext {
  client: DynamoDBClient;
  tableName: string;
  layout: Layout;
  prefix: string;
  clock: Clock;
}

const contexts = new WeakMap<IdempotencyStore, StoreContext>();

export function rememberStore(store: IdempotencyStore, context: StoreContext): void {
  contexts.set(store, context);
}

/**
 * The suite's second channel: raw GetItem, own decoding, and the same expiry rule the
 * contract gives `get` (an expired record reads as none, by the store's clock).
 */
export async function rawRead(
  store: IdempotencyStore,
  storageKey: string,
): Promise<StoredRecord | undefined> {
  const context = contexts.get(store);
  if (!context) throw new Error('rawRead: unknown store');
  const item = await rawItem(
    context.client,
    context.tableName,
    context.layout,
    context.prefix + storageKey,
  );
  if (!item) return undefined;
  const record = decodeRaw(context.layout, item);
  return context.clock.now() >= record.expiresAt ? undefined : record;
}
