import {
  type AttributeValue,
  type DynamoDBClient,
  GetItemCommand,
  UpdateItemCommand,
  type UpdateItemCommandOutput,
} from '@aws-sdk/client-dynamodb';
import {
  type AcquireInput,
  type AcquireResult,
  type Clock,
  type CompleteInput,
  type ExtendInput,
  type IdempotencyStore,
  InvalidInputError,
  OutcomeTooLargeError,
  type OwnerWriteResult,
  type ReleaseInput,
  type StoreCapabilities,
  type StoredRecord,
  StoreUnavailableError,
  systemClock,
} from '@idem/core';
import { packOutcome, unpackOutcome } from './outcome-compression.js';
import {
  checkSizes,
  createItemSchema,
  decodeItem,
  type ItemSchema,
  itemKey,
  namesFor,
  outcomeBudget,
  type RawRecord,
  type RecordAttributeNames,
} from './record-item.js';
import { describeError, isConditionFailure, storeError } from './sdk-errors.js';
import { type EnsureTableOptions, type EnsureTableResult, ensureTable } from './table.js';

/** Options of {@link createDynamoDbStore}. Durations are milliseconds. */
export interface DynamoDbStoreOptions {
  /** A client the caller built and owns (region, credentials, retries). The store never closes it. */
  client: DynamoDBClient;
  /** Name of the table (see `ensureTable()` or the README for its schema). */
  tableName: string;
  /** Prepended to every storage key, e.g. to share a table between services. @default '' */
  keyPrefix?: string;
  /** Name of the partition key attribute (type `S`). @default 'pk' */
  partitionKey?: string;
  /**
   * Single-table layout: every record goes under one static partition key value, with the
   * (prefixed) storage key in the sort key attribute (type `S`). Without it, the storage key
   * is the whole primary key. @default undefined
   */
  singleTable?: {
    /** The static partition key value of every record, e.g. `'IDEM'`. */
    partitionKeyValue: string;
    /** Name of the sort key attribute. @default 'sk' */
    sortKey?: string;
  };
  /** Names of the record's attributes; unset ones keep their defaults. */
  attributes?: Partial<RecordAttributeNames>;
  /**
   * Clock that decides expiry: DynamoDB has no server clock usable in a condition, so every
   * condition compares with this clock's `now`. Keep your servers' clocks in sync (NTP).
   * @default systemClock
   */
  clock?: Clock;
  /**
   * Outcomes of at least this many bytes are gzip-compressed (kept compressed only when that
   * is smaller); `false` stores every outcome as is. Capacity is billed per KB written and
   * read, so compression saves money as well as room. With compression on, an outcome too
   * large to fit as is is always compressed. @default 4096
   */
  compressAboveBytes?: number | false;
  /**
   * Largest encoded outcome accepted at all, before compression, in bytes (the store's
   * `capabilities.maxOutcomeBytes`); larger ones are refused at once. Below it, what counts
   * is the item limit: DynamoDB items hold at most 400 KB, so an outcome that still exceeds
   * its budget (about 398 KiB) after compression is refused with `OutcomeTooLargeError`
   * before anything is written.
   * @default 4 MiB with compression, the uncompressed item budget without
   */
  maxOutcomeBytes?: number;
}

/** A DynamoDB-backed store; see {@link createDynamoDbStore}. */
export interface DynamoDbStore extends IdempotencyStore {
  /** The table this store writes to. */
  readonly tableName: string;
  /**
   * Creates the table when it is missing (on-demand billing) and enables TTL on the `ttl`
   * attribute; checks the key schema of an existing table. Never called by the factory.
   */
  ensureTable(options?: EnsureTableOptions): Promise<EnsureTableResult>;
  /** Primary key of the item that holds `storageKey`, for raw reads and operations tooling. */
  itemKey(storageKey: string): Record<string, AttributeValue>;
}

const IN_PROGRESS: AttributeValue = { S: 'in_progress' };
const COMPLETED: AttributeValue = { S: 'completed' };
const RELEASED: AttributeValue = { S: 'released' };
const NOT_OWNER: OwnerWriteResult = { ok: false, reason: 'not_owner' };
// Each retry follows a write of another caller that changed the item; more than this many in
// a row only happens if the item is not an idem record or the service misbehaves.
const MAX_ACQUIRE_ATTEMPTS = 8;
// Core derives storage keys of 64 characters and owners of 22; the declared limit assumes
// a little more, and `complete` measures the real ones.
const TYPICAL_KEY_LENGTH = 64;
const TYPICAL_OWNER_LENGTH = 64;

const num = (value: number): AttributeValue => ({ N: String(value) });
const ttlOf = (expiresAt: number): AttributeValue => num(Math.ceil(expiresAt / 1000));

// Acquire as one conditional upsert. The condition is "the key is free", decided by the
// caller's clock; the fence is computed by the service from the stored one, so it stays
// monotonic without reading first. On failure the service returns the live item (ALL_OLD).
const ACQUIRE_UPDATE =
  'SET #st = :inProgress, #fp = :fingerprint, #ow = :owner, #fe = if_not_exists(#fe, :zero) + :one, ' +
  '#lu = :leaseUntil, #ex = :expiresAt, #tt = :ttl REMOVE #oc, #oe';
const ACQUIRE_CONDITION =
  'attribute_not_exists(#pk) OR #st = :released OR #ex <= :now OR (#st = :inProgress AND #lu <= :now)';
// Owner-checked writes: the caller's own in-progress record that has not expired (a passed
// lease is fine as long as nobody took it over: that would have changed the owner).
const OWNED_CONDITION = '#ow = :owner AND #st = :inProgress AND #ex > :now';
const COMPLETE_UPDATE = 'SET #st = :completed, #ex = :expiresAt, #tt = :ttl, #oc = :outcome';
const COMPLETE_UPDATE_ENCODED = `${COMPLETE_UPDATE}, #oe = :encoding`;
const RELEASE_UPDATE = 'SET #st = :released, #lu = :now, #ex = :expiresAt, #tt = :ttl';
const EXTEND_UPDATE = 'SET #lu = :leaseUntil, #ex = :expiresAt, #tt = :ttl';

function nonNegative(name: string, value: number): void {
  if (!(Number.isFinite(value) && value >= 0))
    throw new InvalidInputError(`${name} must be a non-negative number of ms`);
}

/**
 * Creates a store that keeps records in a DynamoDB table. Every write is a single
 * conditional request: acquire is one conditional UpdateItem that either takes the key or
 * returns the live item (`ReturnValuesOnConditionCheckFailure: ALL_OLD`), and complete,
 * release and extend are conditional UpdateItems on owner, status and expiry. Reads are
 * strongly consistent. Opens no connection and creates no table.
 */
export function createDynamoDbStore(options: DynamoDbStoreOptions): DynamoDbStore {
  const { client, tableName } = options;
  if (!client || typeof client.send !== 'function')
    throw new InvalidInputError('A DynamoDBClient is required');
  if (typeof tableName !== 'string' || tableName.length === 0)
    throw new InvalidInputError('tableName is required');
  const compressAbove = options.compressAboveBytes ?? 4096;
  if (compressAbove !== false && !(Number.isSafeInteger(compressAbove) && compressAbove >= 0)) {
    throw new InvalidInputError('compressAboveBytes must be a non-negative integer or false');
  }
  const clock = options.clock ?? systemClock;
  const schema: ItemSchema = createItemSchema(
    {
      partitionKey: options.partitionKey ?? 'pk',
      single: options.singleTable && {
        partitionKeyValue: options.singleTable.partitionKeyValue,
        sortKey: options.singleTable.sortKey ?? 'sk',
      },
      keyPrefix: options.keyPrefix ?? '',
    },
    options.attributes,
  );
  // What fits depends on how well an outcome compresses: the capability is the bound past
  // which nothing is tried, and `complete` measures the rest before writing.
  const maxOutcomeBytes =
    options.maxOutcomeBytes ??
    (compressAbove === false
      ? outcomeBudget(schema, 'k'.repeat(TYPICAL_KEY_LENGTH), 'o'.repeat(TYPICAL_OWNER_LENGTH))
      : 4 * 1024 * 1024);
  if (!(Number.isSafeInteger(maxOutcomeBytes) && maxOutcomeBytes > 0)) {
    throw new InvalidInputError('maxOutcomeBytes must be a positive integer');
  }
  const capabilities: StoreCapabilities = { clock: 'client', maxOutcomeBytes };

  // Expressions are constants, so their attribute-name maps are worked out once.
  const namesCache = new Map<string, Record<string, string>>();
  function names(update: string, condition: string): Record<string, string> {
    const cacheKey = `${update}\n${condition}`;
    let found = namesCache.get(cacheKey);
    if (!found) {
      found = namesFor(schema, update, condition);
      namesCache.set(cacheKey, found);
    }
    return found;
  }

  async function update(
    operation: string,
    key: string,
    update: string,
    condition: string,
    values: Record<string, AttributeValue>,
    returnOld: boolean,
  ): Promise<
    | { ok: true; output: UpdateItemCommandOutput }
    | { ok: false; item?: Record<string, AttributeValue> }
  > {
    try {
      const output = await client.send(
        new UpdateItemCommand({
          TableName: tableName,
          Key: itemKey(schema, key),
          UpdateExpression: update,
          ConditionExpression: condition,
          ExpressionAttributeNames: names(update, condition),
          ExpressionAttributeValues: values,
          ReturnValues: returnOld ? 'ALL_OLD' : 'NONE',
          ReturnValuesOnConditionCheckFailure: returnOld ? 'ALL_OLD' : 'NONE',
        }),
      );
      return { ok: true, output };
    } catch (error) {
      if (isConditionFailure(error)) return { ok: false, item: error.Item };
      throw storeError(operation, error);
    }
  }

  async function read(key: string): Promise<RawRecord | undefined> {
    let item: Record<string, AttributeValue> | undefined;
    try {
      const output = await client.send(
        new GetItemCommand({
          TableName: tableName,
          Key: itemKey(schema, key),
          ConsistentRead: true,
        }),
      );
      item = output.Item;
    } catch (error) {
      throw storeError('get', error);
    }
    return item ? decodeItem(schema, item) : undefined;
  }

  async function toRecord(raw: RawRecord): Promise<StoredRecord> {
    const record: StoredRecord = {
      status: raw.status,
      fingerprint: raw.fingerprint,
      owner: raw.owner,
      fence: raw.fence,
      leaseUntil: raw.leaseUntil,
      expiresAt: raw.expiresAt,
    };
    if (raw.outcome) record.outcome = await unpackOutcome(raw.outcome, raw.outcomeEncoding);
    return record;
  }

  const isLive = (record: RawRecord, now: number) =>
    now < record.expiresAt &&
    ((record.status === 'in_progress' && now < record.leaseUntil) || record.status === 'completed');

  async function ownerWrite(
    operation: string,
    key: string,
    owner: string,
    now: number,
    expression: string,
    values: Record<string, AttributeValue>,
  ): Promise<boolean> {
    checkSizes(schema, key);
    const result = await update(
      operation,
      key,
      expression,
      OWNED_CONDITION,
      { ...values, ':owner': { S: owner }, ':inProgress': IN_PROGRESS, ':now': num(now) },
      false,
    );
    return result.ok;
  }

  return {
    capabilities,
    tableName,
    itemKey: (storageKey) => itemKey(schema, storageKey),
    ensureTable: (ensureOptions) => ensureTable(client, tableName, schema, ensureOptions),

    async acquire(input: AcquireInput): Promise<AcquireResult> {
      checkSizes(schema, input.key, input.fingerprint);
      nonNegative('leaseMs', input.leaseMs);
      nonNegative('retentionMs', input.retentionMs);
      for (let attempt = 1; attempt <= MAX_ACQUIRE_ATTEMPTS; attempt++) {
        const now = clock.now();
        const leaseUntil = now + input.leaseMs;
        const expiresAt = leaseUntil + input.retentionMs;
        const result = await update(
          'acquire',
          input.key,
          ACQUIRE_UPDATE,
          ACQUIRE_CONDITION,
          {
            ':inProgress': IN_PROGRESS,
            ':released': RELEASED,
            ':fingerprint': { S: input.fingerprint },
            ':owner': { S: input.owner },
            ':zero': num(0),
            ':one': num(1),
            ':leaseUntil': num(leaseUntil),
            ':expiresAt': num(expiresAt),
            ':ttl': ttlOf(expiresAt),
            ':now': num(now),
          },
          true,
        );
        if (result.ok) {
          const old = result.output.Attributes;
          const previous = old && Object.keys(old).length > 0 ? decodeItem(schema, old) : undefined;
          return {
            kind: 'acquired',
            fence: (previous?.fence ?? 0) + 1,
            leaseUntil,
            // A lease that passed within retention: another owner's execution was cut short.
            takeover: previous?.status === 'in_progress' && now < previous.expiresAt,
          };
        }
        // ALL_OLD brings the item that failed the condition; a consistent read only when the
        // service sent none back (older DynamoDB Local builds).
        const found = result.item ? decodeItem(schema, result.item) : await read(input.key);
        if (found && isLive(found, now))
          return { kind: 'found', record: await toRecord(found), now };
        // The item changed between the write and the read: try again with the new state.
      }
      throw new StoreUnavailableError(
        `DynamoDB acquire gave up after ${MAX_ACQUIRE_ATTEMPTS} attempts: the item keeps changing or is not an idem record`,
      );
    },

    async complete(input: CompleteInput): Promise<OwnerWriteResult> {
      checkSizes(schema, input.key);
      nonNegative('retentionMs', input.retentionMs);
      if (input.outcome.length > maxOutcomeBytes) {
        throw new OutcomeTooLargeError(input.outcome.length, maxOutcomeBytes);
      }
      const rawBudget = outcomeBudget(schema, input.key, input.owner);
      const threshold = compressAbove === false ? false : Math.min(compressAbove, rawBudget + 1);
      const packed = await packOutcome(input.outcome, threshold);
      const limit = outcomeBudget(schema, input.key, input.owner, packed.encoding);
      if (packed.bytes.length > limit) throw new OutcomeTooLargeError(packed.bytes.length, limit);
      const now = clock.now();
      const expiresAt = now + input.retentionMs;
      const values: Record<string, AttributeValue> = {
        ':completed': COMPLETED,
        ':expiresAt': num(expiresAt),
        ':ttl': ttlOf(expiresAt),
        ':outcome': { B: packed.bytes },
      };
      if (packed.encoding !== undefined) values[':encoding'] = { S: packed.encoding };
      const expression = packed.encoding === undefined ? COMPLETE_UPDATE : COMPLETE_UPDATE_ENCODED;
      try {
        return (await ownerWrite('complete', input.key, input.owner, now, expression, values))
          ? { ok: true }
          : NOT_OWNER;
      } catch (error) {
        // The budget is computed to DynamoDB's rules; should the service still find the item
        // too large, the write was rejected whole, so the typed error still holds.
        if (
          error instanceof StoreUnavailableError &&
          /item size/i.test(describeError(error.cause))
        ) {
          throw new OutcomeTooLargeError(packed.bytes.length, limit);
        }
        throw error;
      }
    },

    async release(input: ReleaseInput): Promise<OwnerWriteResult> {
      nonNegative('retentionMs', input.retentionMs);
      const now = clock.now();
      const expiresAt = now + input.retentionMs;
      const ok = await ownerWrite('release', input.key, input.owner, now, RELEASE_UPDATE, {
        ':released': RELEASED,
        ':expiresAt': num(expiresAt),
        ':ttl': ttlOf(expiresAt),
      });
      return ok ? { ok: true } : NOT_OWNER;
    },

    async extend(input: ExtendInput): Promise<OwnerWriteResult> {
      nonNegative('leaseMs', input.leaseMs);
      nonNegative('retentionMs', input.retentionMs);
      const now = clock.now();
      const leaseUntil = now + input.leaseMs;
      const expiresAt = leaseUntil + input.retentionMs;
      const ok = await ownerWrite('extend', input.key, input.owner, now, EXTEND_UPDATE, {
        ':leaseUntil': num(leaseUntil),
        ':expiresAt': num(expiresAt),
        ':ttl': ttlOf(expiresAt),
      });
      return ok ? { ok: true, leaseUntil } : NOT_OWNER;
    },

    async get(key: string): Promise<StoredRecord | undefined> {
      checkSizes(schema, key);
      const raw = await read(key);
      if (!raw || clock.now() >= raw.expiresAt) return undefined;
      return toRecord(raw);
    },

    async close(): Promise<void> {
      // Nothing to free: the client belongs to the caller.
    },
  };
}
