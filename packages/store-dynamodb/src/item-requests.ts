import { AsyncLocalStorage } from 'node:async_hooks';
import {
  type AttributeValue,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { type StoreCallContext, toStoreError } from '@idem/core';
import { decodeItem, type ItemSchema, itemKey, namesFor, type RawRecord } from './record-item.js';
import { DYNAMODB_ERRORS, isConditionFailure, isNamed } from './sdk-errors.js';

/** What a conditional write answered: applied, or refused with the item it found. */
export type WriteResult =
  | { ok: true; old?: Record<string, AttributeValue> }
  | { ok: false; item?: Record<string, AttributeValue> };

/** Which old item a conditional write brings back. */
export interface ReturnOld {
  /** The item as it was before a write that applied (`ReturnValues: ALL_OLD`). */
  onSuccess?: boolean;
  /** The item that failed the condition (`ReturnValuesOnConditionCheckFailure: ALL_OLD`). */
  onFailure?: boolean;
}

/** The requests the store sends: a conditional UpdateItem and a consistent GetItem. */
export interface ItemRequests {
  update(
    operation: string,
    key: string,
    update: string,
    condition: string,
    values: Record<string, AttributeValue>,
    returnOld?: ReturnOld,
  ): Promise<WriteResult>;
  /**
   * A PutItem of a whole item (the key's attributes added here) on `condition` (with its
   * `values`, if any); a refused one brings back the item that failed the condition
   * (`ALL_OLD`). Answers `undefined` when the caller may not send PutItem (a role that
   * grants only `GetItem` and `UpdateItem`, which is all this store needed before it sent
   * PutItem): nothing was written, and the caller sends its UpdateItem instead, from then
   * on without trying.
   */
  create(
    operation: string,
    key: string,
    attributes: Record<string, AttributeValue>,
    condition: string,
    values?: Record<string, AttributeValue>,
  ): Promise<WriteResult | undefined>;
  read(key: string): Promise<RawRecord | undefined>;
  /** The item at `key` as stored (a consistent GetItem), not decoded. */
  readItem(key: string): Promise<Record<string, AttributeValue> | undefined>;
}

/** The engine's signal of the store call whose requests run in this async context. */
const engineCall = new AsyncLocalStorage<AbortSignal>();

/**
 * Runs `fn` (one store call) with its requests cut when the engine stops waiting for it
 * (`call.signal`, core's `storeTimeoutMs`) as well as at the store's `requestDeadlineMs`: a
 * request nobody waits for must not hold one of the client's sockets (its agent keeps at
 * most 50 by default) until the deadline, queueing the next calls behind it. Seen with the
 * SDK's default client, `storeTimeoutMs` 1 s and a DynamoDB Local frozen 9 s: 50 sockets
 * busy with abandoned requests and 46 calls queued in the agent at SIGCONT, the store
 * serving again 1.4 to 2.5 s later instead of at once (test/stores32-recovery.test.ts).
 */
export function withEngineCall<T>(
  call: StoreCallContext | undefined,
  fn: () => Promise<T>,
): Promise<T> {
  const signal = call?.signal;
  return signal instanceof AbortSignal ? engineCall.run(signal, fn) : fn();
}

export function createItemRequests(
  client: DynamoDBClient,
  tableName: string,
  schema: ItemSchema,
  deadlineMs: number,
): ItemRequests {
  /** Each request aborted past `deadlineMs` (see `requestDeadlineMs`), retries included. */
  const bounded = () => {
    const deadline = AbortSignal.timeout(deadlineMs);
    const engine = engineCall.getStore();
    return { abortSignal: engine ? AbortSignal.any([deadline, engine]) : deadline };
  };
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

  async function readItem(key: string): Promise<Record<string, AttributeValue> | undefined> {
    try {
      const output = await client.send(
        new GetItemCommand({
          TableName: tableName,
          Key: itemKey(schema, key),
          ConsistentRead: true,
        }),
        bounded(),
      );
      return output.Item;
    } catch (error) {
      throw toStoreError(DYNAMODB_ERRORS, 'get', error);
    }
  }

  let putDenied = false;

  return {
    async update(operation, key, update, condition, values, returnOld = {}) {
      try {
        const output = await client.send(
          new UpdateItemCommand({
            TableName: tableName,
            Key: itemKey(schema, key),
            UpdateExpression: update,
            ConditionExpression: condition,
            ExpressionAttributeNames: names(update, condition),
            ExpressionAttributeValues: values,
            ReturnValues: returnOld.onSuccess ? 'ALL_OLD' : 'NONE',
            ReturnValuesOnConditionCheckFailure: returnOld.onFailure ? 'ALL_OLD' : 'NONE',
          }),
          bounded(),
        );
        return output.Attributes ? { ok: true, old: output.Attributes } : { ok: true };
      } catch (error) {
        if (isConditionFailure(error))
          return error.Item ? { ok: false, item: error.Item } : { ok: false };
        throw toStoreError(DYNAMODB_ERRORS, operation, error);
      }
    },

    async create(operation, key, attributes, condition, values) {
      if (putDenied) return undefined;
      try {
        await client.send(
          new PutItemCommand({
            TableName: tableName,
            Item: { ...attributes, ...itemKey(schema, key) },
            ConditionExpression: condition,
            ExpressionAttributeNames: names('', condition),
            ExpressionAttributeValues: values,
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          }),
          bounded(),
        );
        return { ok: true };
      } catch (error) {
        if (isConditionFailure(error))
          return error.Item ? { ok: false, item: error.Item } : { ok: false };
        if (isNamed(error, 'AccessDeniedException')) {
          putDenied = true;
          return undefined;
        }
        throw toStoreError(DYNAMODB_ERRORS, operation, error);
      }
    },

    async read(key) {
      const item = await readItem(key);
      return item ? decodeItem(schema, item) : undefined;
    },

    readItem,
  };
}
