import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import {
  InvalidInputError,
  quotedInput,
  type RecordStatus,
  StoreUnavailableError,
} from '@idem/core';

/** Names of the attributes a record is stored in. Every name MUST be distinct. */
export interface RecordAttributeNames {
  /** `S`: `in_progress`, `completed` or `released`. @default 'status' */
  status: string;
  /** `S`: fingerprint of the request that acquired the record. @default 'fingerprint' */
  fingerprint: string;
  /** `S`: owner token of the latest acquisition. @default 'owner' */
  owner: string;
  /**
   * `S`: owner token of the acquisition that began the record's logical request (the
   * contract's `origin`); absent in an item written before stores kept it, which then
   * counts its `owner`. @default 'origin'
   */
  origin: string;
  /** `N`: fencing token of the latest acquisition. @default 'fence' */
  fence: string;
  /** `N`: lease deadline, epoch ms. @default 'leaseUntil' */
  leaseUntil: string;
  /** `N`: retention deadline, epoch ms (what every condition checks). @default 'expiresAt' */
  expiresAt: string;
  /** `B`: the encoded outcome, present once completed. @default 'outcome' */
  outcome: string;
  /** `S`: `gzip` when `outcome` is compressed, absent otherwise. @default 'outcomeEncoding' */
  outcomeEncoding: string;
  /** `N`: `expiresAt` in epoch seconds, rounded up: the table's TTL attribute. @default 'ttl' */
  ttl: string;
}

/** Default attribute names. */
export const defaultAttributeNames: Readonly<RecordAttributeNames> = Object.freeze({
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
});

/** Where the storage key goes: the whole primary key, or the sort key under one static partition key value. */
export interface KeyLayout {
  partitionKey: string;
  /** Single-table layout: sort key attribute name and the static partition key value. */
  single?: { sortKey: string; partitionKeyValue: string };
  keyPrefix: string;
}

/** The attribute names and key layout of one store, with the placeholders expressions use. */
export interface ItemSchema {
  layout: KeyLayout;
  names: RecordAttributeNames;
  /** Placeholder (`#st`) to attribute name, for ExpressionAttributeNames. */
  placeholders: Record<string, string>;
}

const PLACEHOLDERS: Record<keyof RecordAttributeNames, string> = {
  status: '#st',
  fingerprint: '#fp',
  owner: '#ow',
  origin: '#og',
  fence: '#fe',
  leaseUntil: '#lu',
  expiresAt: '#ex',
  outcome: '#oc',
  outcomeEncoding: '#oe',
  ttl: '#tt',
};

/** Builds and checks the schema; throws `InvalidInputError` on an empty or repeated name. */
export function createItemSchema(
  layout: KeyLayout,
  names: Partial<RecordAttributeNames> = {},
): ItemSchema {
  const resolved: RecordAttributeNames = { ...defaultAttributeNames, ...names };
  const all = [
    layout.partitionKey,
    ...(layout.single ? [layout.single.sortKey] : []),
    ...Object.values(resolved),
  ];
  for (const name of all) {
    if (typeof name !== 'string' || name.length === 0)
      throw new InvalidInputError('Attribute names must be non-empty strings');
    if (!isWellFormed(name))
      throw new InvalidInputError('Attribute names must be well-formed strings');
  }
  // DynamoDB's limits, checked here so that a store that could never write fails at creation
  // (an InvalidInputError) rather than at every call (a 503 retried for ever).
  const keyNames = [layout.partitionKey, ...(layout.single ? [layout.single.sortKey] : [])];
  for (const name of keyNames) {
    if (utf8(name) > MAX_KEY_ATTRIBUTE_NAME_BYTES)
      throw new InvalidInputError(
        `Key attribute names must be at most ${MAX_KEY_ATTRIBUTE_NAME_BYTES} bytes (UTF-8); got ${utf8(name)}`,
      );
  }
  for (const name of Object.values(resolved)) {
    if (utf8(name) > MAX_ATTRIBUTE_NAME_BYTES)
      throw new InvalidInputError(
        `Attribute names must be at most ${MAX_ATTRIBUTE_NAME_BYTES} bytes (UTF-8); got ${utf8(name)}`,
      );
  }
  if (new Set(all).size !== all.length)
    throw new InvalidInputError(
      // Each name quoted up to 64 characters: one may be 64 KiB long.
      `Attribute names must be distinct: ${all.map((name) => quotedInput(name)).join(', ')}`,
    );
  if (layout.single) {
    const value: unknown = layout.single.partitionKeyValue;
    // Well-formed, as keyPrefix: two values differing only in a lone surrogate would be sent
    // as the same bytes (U+FFFD) and share one partition.
    if (typeof value !== 'string' || value.length === 0 || !isWellFormed(value))
      throw new InvalidInputError(
        'singleTable.partitionKeyValue must be a non-empty, well-formed string',
      );
    if (utf8(value) > MAX_PARTITION_KEY_BYTES)
      throw new InvalidInputError(
        `singleTable.partitionKeyValue must be at most ${MAX_PARTITION_KEY_BYTES} bytes (UTF-8), DynamoDB's partition key limit; got ${utf8(value)}`,
      );
  }
  const placeholders: Record<string, string> = { '#pk': layout.partitionKey };
  for (const [field, placeholder] of Object.entries(PLACEHOLDERS)) {
    placeholders[placeholder] = resolved[field as keyof RecordAttributeNames];
  }
  return { layout, names: resolved, placeholders };
}

/** Primary key of the item holding `storageKey`. */
export function itemKey(schema: ItemSchema, storageKey: string): Record<string, AttributeValue> {
  const { partitionKey, single, keyPrefix } = schema.layout;
  const value = keyPrefix + storageKey;
  return single
    ? { [partitionKey]: { S: single.partitionKeyValue }, [single.sortKey]: { S: value } }
    : { [partitionKey]: { S: value } };
}

/** ExpressionAttributeNames for exactly the placeholders the expressions use (DynamoDB rejects unused ones). */
export function namesFor(schema: ItemSchema, ...expressions: string[]): Record<string, string> {
  const used: Record<string, string> = {};
  for (const expression of expressions) {
    for (const match of expression.matchAll(/#[a-z]+/g)) {
      const name = schema.placeholders[match[0]];
      if (name === undefined) throw new Error(`Unknown placeholder ${match[0]}`);
      used[match[0]] = name;
    }
  }
  return used;
}

/** A record as read from an item, with the outcome bytes as stored (maybe compressed). */
export interface RawRecord {
  status: RecordStatus;
  fingerprint: string;
  owner: string;
  /** The item's origin attribute; absent in an item written before stores kept it. */
  origin?: string;
  fence: number;
  leaseUntil: number;
  expiresAt: number;
  outcome?: Uint8Array;
  outcomeEncoding?: string;
}

const STATUSES: readonly string[] = ['in_progress', 'completed', 'released'];

function malformed(what: string): StoreUnavailableError {
  return new StoreUnavailableError(`DynamoDB item is not an idem record: ${what}`);
}

function str(item: Record<string, AttributeValue>, name: string): string {
  const value = item[name]?.S;
  if (value === undefined) throw malformed(`attribute ${name} is not a string`);
  return value;
}

function num(item: Record<string, AttributeValue>, name: string): number {
  const raw = item[name]?.N;
  const value = raw === undefined ? Number.NaN : Number(raw);
  if (!Number.isFinite(value)) throw malformed(`attribute ${name} is not a number`);
  return value;
}

/** Reads a record from an item; throws `StoreUnavailableError` when the item is not one. */
export function decodeItem(schema: ItemSchema, item: Record<string, AttributeValue>): RawRecord {
  const { names } = schema;
  const status = str(item, names.status);
  if (!STATUSES.includes(status)) throw malformed(`unknown status ${status}`);
  const record: RawRecord = {
    status: status as RecordStatus,
    fingerprint: str(item, names.fingerprint),
    owner: str(item, names.owner),
    fence: num(item, names.fence),
    leaseUntil: num(item, names.leaseUntil),
    expiresAt: num(item, names.expiresAt),
  };
  if (item[names.origin] !== undefined) {
    // No store writes an empty origin (an owner token is never empty).
    const origin = str(item, names.origin);
    if (origin === '') throw malformed(`attribute ${names.origin} is empty`);
    record.origin = origin;
  }
  if (status === 'completed') {
    const bytes = item[names.outcome]?.B;
    if (bytes === undefined) throw malformed(`completed record without ${names.outcome}`);
    record.outcome = bytes;
    const encoding = item[names.outcomeEncoding]?.S;
    if (encoding !== undefined) record.outcomeEncoding = encoding;
  }
  return record;
}

/** DynamoDB's item size limit: attribute names plus values, 400 KB. */
export const MAX_ITEM_BYTES = 400 * 1024;
/** Longest fingerprint accepted (UTF-8 bytes); reserved in full when sizing a completed item. */
export const MAX_FINGERPRINT_BYTES = 1024;
/** Longest storage key with its prefix (UTF-8 bytes): DynamoDB's sort key limit. */
export const MAX_KEY_BYTES = 1024;
/** DynamoDB's partition key value limit (UTF-8 bytes), for `singleTable.partitionKeyValue`. */
export const MAX_PARTITION_KEY_BYTES = 2048;
/** DynamoDB's limit on the name of a key attribute (partition or sort key), UTF-8 bytes. */
const MAX_KEY_ATTRIBUTE_NAME_BYTES = 255;
/** DynamoDB's limit on any other attribute name, UTF-8 bytes. */
const MAX_ATTRIBUTE_NAME_BYTES = 65_535;
// A number attribute takes at most 21 bytes; a little slack on top for rounding in the service.
const NUMBER_BYTES = 21;
const SLACK_BYTES = 64;

const utf8 = (value: string) => Buffer.byteLength(value, 'utf8');

/**
 * Largest `outcome` value that fits a completed item of this key and owner, by DynamoDB's
 * item size rules: every attribute name and value counted, the fingerprint and the origin
 * (another owner's token, when a takeover or a retry after a release carried it over)
 * reserved at their maximum, numbers at their maximum.
 */
export function outcomeBudget(
  schema: ItemSchema,
  storageKey: string,
  owner: string,
  encoding?: string,
): number {
  const { names } = schema;
  let used = SLACK_BYTES;
  for (const [name, value] of Object.entries(itemKey(schema, storageKey)))
    used += utf8(name) + utf8(value.S ?? '');
  used += utf8(names.status) + utf8('completed');
  used += utf8(names.fingerprint) + MAX_FINGERPRINT_BYTES;
  used += utf8(names.owner) + utf8(owner);
  used += utf8(names.origin) + MAX_OWNER_BYTES;
  for (const name of [names.fence, names.leaseUntil, names.expiresAt, names.ttl])
    used += utf8(name) + NUMBER_BYTES;
  used += utf8(names.outcome);
  if (encoding !== undefined) used += utf8(names.outcomeEncoding) + utf8(encoding);
  return MAX_ITEM_BYTES - used;
}

/** Longest owner token accepted (UTF-8 bytes); core's are 36. */
export const MAX_OWNER_BYTES = 1024;

/** A lone surrogate: a string holding one is not well-formed UTF-16 and has no exact UTF-8 form. */
const LONE_SURROGATE = /\p{Cs}/u;

/** True for a string that is well-formed UTF-16 (and so stored and read back exactly). */
export const isWellFormed = (value: unknown): value is string =>
  typeof value === 'string' && !LONE_SURROGATE.test(value);

/**
 * Throws `InvalidInputError` when a key or fingerprint cannot be stored: an empty or
 * malformed storage key, one longer than DynamoDB's key limit with its prefix, a malformed
 * or oversized fingerprint. Checked before any request, so that bad input is a caller error
 * rather than a ValidationException reported as a store failure.
 */
export function checkSizes(schema: ItemSchema, storageKey: string, fingerprint?: string): void {
  if (!isWellFormed(storageKey) || storageKey.length === 0)
    throw new InvalidInputError('A storage key must be a non-empty, well-formed string');
  if (utf8(schema.layout.keyPrefix + storageKey) > MAX_KEY_BYTES) {
    throw new InvalidInputError(`Storage key with prefix exceeds ${MAX_KEY_BYTES} bytes`);
  }
  if (fingerprint === undefined) return;
  if (!isWellFormed(fingerprint))
    throw new InvalidInputError('A fingerprint must be a well-formed string');
  if (utf8(fingerprint) > MAX_FINGERPRINT_BYTES) {
    throw new InvalidInputError(`Fingerprint exceeds ${MAX_FINGERPRINT_BYTES} bytes`);
  }
}

/**
 * Throws `InvalidInputError` unless `owner` is a non-empty, well-formed string of at most
 * {@link MAX_OWNER_BYTES} bytes. Two empty tokens would be one owner, each caller answered
 * as the other's own acquisition; an oversized one would fail in DynamoDB.
 */
export function checkOwner(owner: unknown): string {
  if (!isWellFormed(owner) || owner.length === 0 || utf8(owner) > MAX_OWNER_BYTES) {
    throw new InvalidInputError(
      `An owner must be a non-empty, well-formed string of at most ${MAX_OWNER_BYTES} bytes`,
    );
  }
  return owner;
}
