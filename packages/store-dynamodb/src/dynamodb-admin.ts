import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import {
  type AdminDeleteAnswer,
  type AdminReleaseAnswer,
  type Clock,
  createStoreAdmin,
  meetsExpectation,
  readClock,
  type StoreAdmin,
  StoreUnavailableError,
} from '@idem/core';
import {
  DELETE_CONDITION,
  DELETE_UPDATE,
  FORCE_RELEASE_CONDITION,
  FORCE_RELEASE_UPDATE,
  IN_PROGRESS,
  MAX_ADMIN_ATTEMPTS,
  NUMBER_TYPE,
  num,
  RELEASED,
  STRING_TYPE,
} from './expressions.js';
import type { ItemRequests, WriteResult } from './item-requests.js';
import { checkSizes, decodeItem, type ItemSchema, type RawRecord } from './record-item.js';

type Item = Record<string, AttributeValue>;

/** A record an operator may write, as read: decoded, and the values its write is held to. */
interface ReadRecord {
  record: RawRecord;
  /** The condition's `:seen…` values and type names (see `AS_READ` in expressions.ts). */
  seen: Record<string, AttributeValue>;
}

/** A conditional write of the record `read`, sent. */
interface AdminWrite {
  read: ReadRecord;
  write: Promise<WriteResult>;
}

/** Refused before anything was written: the store applied nothing. */
function leftAsItIs(what: string, cause?: unknown): StoreUnavailableError {
  return new StoreUnavailableError(`DynamoDB item ${what}: left as it is`, {
    unsent: true,
    ...(cause === undefined ? {} : { cause }),
  });
}

/**
 * The record an operator write may change, from the item read; throws (nothing written)
 * when the item is not a record a store wrote: not decodable (another application's item,
 * an attribute of the wrong type or missing, an unknown status), or a fence that is not a
 * whole number in 0..2^53 - 1 (a write would carry it on, answering a fence the caller
 * cannot use).
 */
function readRecord(schema: ItemSchema, item: Item): ReadRecord {
  let record: RawRecord;
  try {
    record = decodeItem(schema, item);
  } catch (error) {
    throw leftAsItIs(`not written by a store (${(error as Error).message})`, error);
  }
  const { names } = schema;
  const fence = item[names.fence]?.N ?? '';
  if (!/^\d+$/.test(fence) || !Number.isSafeInteger(record.fence))
    throw leftAsItIs(
      `with fence ${fence} (not written by a store: not a whole number in 0..2^53 - 1)`,
    );
  const seen = {
    ':seenOwner': item[names.owner] as AttributeValue,
    ':seenFence': item[names.fence] as AttributeValue,
    ':string': STRING_TYPE,
    ':number': NUMBER_TYPE,
  };
  return { record, seen };
}

/**
 * The operator actions of a DynamoDB store: `inspect` is a consistent GetItem; `forceRelease`
 * and `delete` read the item first (a consistent GetItem), refuse one no store wrote before
 * anything is sent, and then send one UpdateItem whose condition holds the item to what was
 * read (its status, owner, fence and attribute types): a write of another caller in between
 * fails it, and the decision is taken again on the item that failed it. `forceRelease` keeps
 * the record's origin (an item without one gets its owner's, before the owner changes), so
 * the retry continues the logical request. `delete` leaves an expired tombstone that holds
 * only the fence (no outcome, no fingerprint, no origin, an owner no executor holds, the TTL
 * attribute kept), so the next acquisition continues above it and begins a new logical
 * request. With an expectation (`forceRelease`'s owner and fence, `delete`'s status, owner
 * and fence) the decision on the item read compares it, and the condition holds the item to
 * those values as read: a record that another caller changed in between refuses the write.
 * Expiry by the store's clock.
 */
export function createDynamoDbAdmin(
  requests: ItemRequests,
  schema: ItemSchema,
  clock: Clock,
): StoreAdmin {
  /**
   * Decides on the item at `key` with `decide`: an answer without writing, or a write of the
   * record it read. A refused write (the item changed in between) is decided again on the
   * item it brings back (or reads), until a write applies or `decide` answers.
   */
  async function decideAndWrite<T>(
    key: string,
    decide: (item: Item | undefined, now: number) => { answer: T } | AdminWrite,
    applied: (read: ReadRecord, now: number) => T,
  ): Promise<T> {
    let item = await requests.readItem(key);
    for (let round = 0; round < MAX_ADMIN_ATTEMPTS; round++) {
      const now = readClock(clock);
      const step = decide(item, now);
      if ('answer' in step) return step.answer;
      const result = await step.write;
      if (result.ok) return applied(step.read, now);
      // Older DynamoDB Local builds send no ALL_OLD item with a refusal: read it.
      item = result.item ?? (await requests.readItem(key));
    }
    throw new StoreUnavailableError(
      `DynamoDB item kept changing under an operator write (${MAX_ADMIN_ATTEMPTS} attempts); nothing was written`,
      { unsent: true },
    );
  }

  /** The conditional UpdateItem of the record `read`, held to it (its `seen` values). */
  const write = (
    operation: string,
    key: string,
    expressions: { update: string; condition: string },
    read: ReadRecord,
    values: Record<string, AttributeValue>,
  ): AdminWrite => ({
    read,
    write: requests.update(
      operation,
      key,
      expressions.update,
      expressions.condition,
      { ...read.seen, ...values },
      { onFailure: true },
    ),
  });

  return createStoreAdmin({
    checkKey: (key) => checkSizes(schema, key),
    async read(key) {
      const raw = await requests.read(key);
      const record = raw && { ...raw, outcomeBytes: raw.outcome?.length };
      return { now: readClock(clock), record };
    },
    forceRelease(key, owner, expected) {
      return decideAndWrite<AdminReleaseAnswer>(
        key,
        (item, now) => {
          if (!item) return { answer: 'not_found' };
          const read = readRecord(schema, item);
          const { record } = read;
          if (!(now < record.expiresAt)) return { answer: 'not_found' };
          if (record.status !== 'in_progress') return { answer: 'not_in_progress' };
          // Another execution than the one expected: the write below is held to the owner and
          // fence read, so one that takes the key over after this read refuses it too.
          if (!meetsExpectation(record, expected))
            return { answer: { changed: true, owner: record.owner, fence: record.fence } };
          if (record.fence >= Number.MAX_SAFE_INTEGER)
            throw leftAsItIs(`at fence ${record.fence}: no fence left below 2^53 to raise it to`);
          const expressions = { update: FORCE_RELEASE_UPDATE, condition: FORCE_RELEASE_CONDITION };
          return write('forceRelease', key, expressions, read, {
            ':inProgress': IN_PROGRESS,
            ':released': RELEASED,
            ':owner': { S: owner },
            ':nextFence': num(record.fence + 1),
            ':now': num(now),
          });
        },
        ({ record }) => ({ fence: record.fence + 1, previousOwner: record.owner }),
      );
    },
    delete(key, owner, expected) {
      return decideAndWrite<AdminDeleteAnswer>(
        key,
        (item, now) => {
          // No item: nothing to delete, and nothing is created.
          if (!item) return { answer: false };
          const read = readRecord(schema, item);
          const { record } = read;
          // A live record that is not the one expected is left as it is. The write below is
          // held to the status, owner and fence read (equal to those expected), so a record
          // that changes after this read refuses it, and is decided again.
          if (now < record.expiresAt && !meetsExpectation(record, expected)) {
            const { status, owner: current, fence } = record;
            return { answer: { changed: true, status, owner: current, fence } };
          }
          const expressions = { update: DELETE_UPDATE, condition: DELETE_CONDITION };
          return write('delete', key, expressions, read, {
            ':seenStatus': item[schema.names.status] as AttributeValue,
            ':seenExpires': item[schema.names.expiresAt] as AttributeValue,
            ':released': RELEASED,
            ':owner': { S: owner },
            ':none': { S: '' },
            ':now': num(now),
          });
        },
        ({ record }, now) => now < record.expiresAt,
      );
    },
  });
}
