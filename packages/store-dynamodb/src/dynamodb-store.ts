import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import {
  type AcquireInput,
  type AcquireResult,
  blocksAcquire,
  type CompleteInput,
  checkDuration,
  checkOutcome,
  checkPositiveInteger,
  type ExtendInput,
  InvalidInputError,
  NOT_OWNER,
  OutcomeTooLargeError,
  OWNED,
  type OwnerWriteResult,
  ownerWriteResult,
  type ReleaseInput,
  type StoreCapabilities,
  type StoredRecord,
  StoreUnavailableError,
  systemClock,
} from '@idem/core';
import { createDynamoDbAdmin } from './dynamodb-admin.js';
import {
  ACQUIRE_CONDITION,
  ACQUIRE_UPDATE,
  COMPLETE_UPDATE,
  COMPLETE_UPDATE_ENCODED,
  COMPLETED,
  CREATE_CONDITION,
  EXTEND_UPDATE,
  IN_PROGRESS,
  MAX_ACQUIRE_ATTEMPTS,
  num,
  OWNED_CONDITION,
  RELEASE_UPDATE,
  RELEASED,
  TYPICAL_KEY_LENGTH,
  TYPICAL_OWNER_LENGTH,
  ttlOf,
} from './expressions.js';
import { createItemRequests } from './item-requests.js';
import type { DynamoDbStore, DynamoDbStoreOptions } from './options.js';
import { holdsOutcome, packOutcome, unpackOutcome } from './outcome-compression.js';
import {
  checkOwner,
  checkSizes,
  createItemSchema,
  decodeItem,
  type ItemSchema,
  isWellFormed,
  itemKey,
  outcomeBudget,
  type RawRecord,
} from './record-item.js';
import { describeError } from './sdk-errors.js';
import { ensureTable } from './table.js';

/**
 * Creates a store that keeps records in a DynamoDB table. Every write is a single
 * conditional request: acquire is one conditional UpdateItem that either takes the key or
 * returns the live item (`ReturnValuesOnConditionCheckFailure: ALL_OLD`), and complete,
 * release and extend are conditional UpdateItems on owner, status and expiry. Reads are
 * strongly consistent. Opens no connection and creates no table.
 *
 * A request delivered twice (the SDK retries a request whose answer was lost) answers what
 * its first delivery would have (contract rule 7): an acquire that finds the caller's own
 * in-progress record renews its lease with one more owner-checked write and answers
 * `acquired` with the same fence; a complete that finds the record completed by the same
 * owner with the same outcome bytes answers `{ ok: true }` (the failed condition's ALL_OLD
 * item shows them, no extra request); a release that finds its own tombstone answers
 * `{ ok: true }`.
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
  const keyPrefix = options.keyPrefix ?? '';
  if (!isWellFormed(keyPrefix))
    throw new InvalidInputError('keyPrefix must be a well-formed string');
  const clock = options.clock ?? systemClock;
  const schema: ItemSchema = createItemSchema(
    {
      partitionKey: options.partitionKey ?? 'pk',
      single: options.singleTable && {
        partitionKeyValue: options.singleTable.partitionKeyValue,
        sortKey: options.singleTable.sortKey ?? 'sk',
      },
      keyPrefix,
    },
    options.attributes,
  );
  // What fits depends on how well an outcome compresses: the capability is the bound past
  // which nothing is tried, and `complete` measures the rest before writing.
  const maxOutcomeBytes = checkPositiveInteger(
    'maxOutcomeBytes',
    options.maxOutcomeBytes ??
      (compressAbove === false
        ? outcomeBudget(schema, 'k'.repeat(TYPICAL_KEY_LENGTH), 'o'.repeat(TYPICAL_OWNER_LENGTH))
        : 4 * 1024 * 1024),
  );
  const capabilities: StoreCapabilities = { clock: 'injectable', maxOutcomeBytes };

  const requests = createItemRequests(client, tableName, schema);

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

  /**
   * One conditional write on `owner = mine AND status = in_progress AND not expired`.
   * With `withFound`, a refused write also returns the record that refused it (from the
   * failed condition's ALL_OLD item, or a consistent read if the service sent none), so a
   * redelivered call can recognise its own earlier write.
   */
  async function ownerWrite(
    operation: string,
    key: string,
    owner: string,
    now: number,
    expression: string,
    values: Record<string, AttributeValue>,
    withFound = false,
  ): Promise<{ ok: true } | { ok: false; found?: RawRecord }> {
    checkSizes(schema, key);
    checkOwner(owner);
    const result = await requests.update(
      operation,
      key,
      expression,
      OWNED_CONDITION,
      { ...values, ':owner': { S: owner }, ':inProgress': IN_PROGRESS, ':now': num(now) },
      { onFailure: withFound },
    );
    if (result.ok) return { ok: true };
    if (!withFound) return { ok: false };
    const found = result.item ? decodeItem(schema, result.item) : await requests.read(key);
    return found ? { ok: false, found } : { ok: false };
  }

  /** The record is unexpired, in `status` and held by `owner`: the caller's own earlier write. */
  const ownRecord = (
    found: RawRecord | undefined,
    status: RawRecord['status'],
    owner: string,
    now: number,
  ): found is RawRecord =>
    found !== undefined &&
    found.status === status &&
    found.owner === owner &&
    now < found.expiresAt;

  return {
    capabilities,
    tableName,
    itemKey: (storageKey) => itemKey(schema, storageKey),
    ensureTable: (ensureOptions) => ensureTable(client, tableName, schema, ensureOptions),
    admin: createDynamoDbAdmin(requests, schema, clock),

    async acquire(input: AcquireInput): Promise<AcquireResult> {
      checkSizes(schema, input.key, input.fingerprint);
      checkOwner(input.owner);
      checkDuration('leaseMs', input.leaseMs);
      checkDuration('retentionMs', input.retentionMs);
      // Attempt 0 is the create; up to MAX_ACQUIRE_ATTEMPTS upserts follow, as before.
      for (let attempt = 0; attempt <= MAX_ACQUIRE_ATTEMPTS; attempt++) {
        const now = clock.now();
        const leaseUntil = now + input.leaseMs;
        const expiresAt = leaseUntil + input.retentionMs;
        // The first attempt creates the item if the key is new (the common case: one PutItem);
        // one that finds an item the key is free in (released, expired, lease passed) goes on
        // to the upsert, which computes the next fence from the stored one.
        const result =
          attempt === 0
            ? await requests.create(
                'acquire',
                input.key,
                {
                  [schema.names.status]: IN_PROGRESS,
                  [schema.names.fingerprint]: { S: input.fingerprint },
                  [schema.names.owner]: { S: input.owner },
                  [schema.names.fence]: num(1),
                  [schema.names.leaseUntil]: num(leaseUntil),
                  [schema.names.expiresAt]: num(expiresAt),
                  [schema.names.ttl]: ttlOf(expiresAt),
                },
                CREATE_CONDITION,
              )
            : await requests.update(
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
                { onSuccess: true, onFailure: true },
              );
        if (result.ok) {
          const old = result.old;
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
        const found = result.item
          ? decodeItem(schema, result.item)
          : await requests.read(input.key);
        if (ownRecord(found, 'in_progress', input.owner, now)) {
          // This very acquisition, delivered again (an SDK retry after a lost answer): it
          // keeps its fence and renews its lease, owner-checked like a heartbeat.
          const renewed = await ownerWrite('acquire', input.key, input.owner, now, EXTEND_UPDATE, {
            ':leaseUntil': num(leaseUntil),
            ':expiresAt': num(expiresAt),
            ':ttl': ttlOf(expiresAt),
          });
          if (renewed.ok)
            return { kind: 'acquired', fence: found.fence, leaseUntil, takeover: false };
          continue;
        }
        if (found && blocksAcquire(found, now))
          return { kind: 'found', record: await toRecord(found), now };
        // A free key that already has an item (the create's answer), or an item that changed
        // between the write and the read: the upsert, with the new state.
      }
      throw new StoreUnavailableError(
        `DynamoDB acquire gave up after ${MAX_ACQUIRE_ATTEMPTS} attempts: the item keeps changing or is not an idem record`,
      );
    },

    async complete(input: CompleteInput): Promise<OwnerWriteResult> {
      checkSizes(schema, input.key);
      checkOwner(input.owner);
      checkDuration('retentionMs', input.retentionMs);
      checkOutcome(input.outcome, maxOutcomeBytes);
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
        const written = await ownerWrite(
          'complete',
          input.key,
          input.owner,
          now,
          expression,
          values,
          true,
        );
        if (written.ok) return OWNED;
        // Completed by this owner with the same outcome: this completion, delivered again.
        const { found } = written;
        return ownRecord(found, 'completed', input.owner, now) &&
          found.outcome !== undefined &&
          (await holdsOutcome(found.outcome, found.outcomeEncoding, packed, input.outcome))
          ? OWNED
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
      checkDuration('retentionMs', input.retentionMs);
      const now = clock.now();
      const expiresAt = now + input.retentionMs;
      const written = await ownerWrite(
        'release',
        input.key,
        input.owner,
        now,
        RELEASE_UPDATE,
        { ':released': RELEASED, ':expiresAt': num(expiresAt), ':ttl': ttlOf(expiresAt) },
        true,
      );
      // This owner's tombstone already: this release, delivered again.
      return ownerWriteResult(written.ok || ownRecord(written.found, 'released', input.owner, now));
    },

    async extend(input: ExtendInput): Promise<OwnerWriteResult> {
      checkDuration('leaseMs', input.leaseMs);
      checkDuration('retentionMs', input.retentionMs);
      const now = clock.now();
      const leaseUntil = now + input.leaseMs;
      const expiresAt = leaseUntil + input.retentionMs;
      const written = await ownerWrite('extend', input.key, input.owner, now, EXTEND_UPDATE, {
        ':leaseUntil': num(leaseUntil),
        ':expiresAt': num(expiresAt),
        ':ttl': ttlOf(expiresAt),
      });
      return ownerWriteResult(written.ok, leaseUntil);
    },

    async get(key: string): Promise<StoredRecord | undefined> {
      checkSizes(schema, key);
      const raw = await requests.read(key);
      if (!raw || clock.now() >= raw.expiresAt) return undefined;
      return toRecord(raw);
    },

    async close(): Promise<void> {
      // Nothing to free: the client belongs to the caller.
    },
  };
}
