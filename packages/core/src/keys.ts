import { canonicalJson, type JsonValue } from './canonical-json.js';
import { digestParts, storageKeyDigest } from './encoding.js';
import { InvalidInputError, InvalidKeyError } from './errors.js';

/** Longest idempotency key accepted, in characters. */
export const MAX_KEY_LENGTH = 255;

/**
 * Checks that `key` is 1..255 printable ASCII characters (0x20..0x7E).
 * @throws InvalidKeyError with a message that says what is wrong
 */
export function validateKey(key: unknown): asserts key is string {
  if (typeof key !== 'string') throw new InvalidKeyError('The idempotency key must be a string');
  if (key.length === 0) throw new InvalidKeyError('The idempotency key is empty');
  if (key.length > MAX_KEY_LENGTH) {
    throw new InvalidKeyError(
      `The idempotency key is ${key.length} characters long; at most ${MAX_KEY_LENGTH} are allowed`,
    );
  }
  // A loop, not a regular expression: it runs on every request, and costs less for keys.
  for (let i = 0; i < key.length; i++) {
    const unit = key.charCodeAt(i);
    if (unit < 0x20 || unit > 0x7e)
      throw new InvalidKeyError('The idempotency key may contain only printable ASCII characters');
  }
}

/** True when `key` is a valid idempotency key (see {@link validateKey}). */
export function isValidKey(key: unknown): key is string {
  try {
    validateKey(key);
    return true;
  } catch {
    return false;
  }
}

/** Options of {@link generateKey}. */
export interface GenerateKeyOptions {
  /**
   * UUID version: 4 is fully random; 7 starts with a millisecond timestamp, so keys sort by
   * creation time (friendlier to B-tree indexes).
   * @default 4
   */
  version?: 4 | 7;
  /** Clock for version 7, in epoch milliseconds. @default Date.now */
  now?: () => number;
}

/** A fresh random idempotency key: a UUID, version 4 by default or 7 on request. */
export function generateKey(options: GenerateKeyOptions = {}): string {
  if (typeof options !== 'object' || options === null)
    throw new InvalidInputError('generateKey takes an options object (or none)');
  const version = options.version ?? 4;
  if (version === 4) return crypto.randomUUID();
  if (version !== 7) throw new InvalidInputError(`Unsupported UUID version ${String(version)}`);
  if (options.now !== undefined && typeof options.now !== 'function')
    throw new InvalidInputError('generateKey: now must be a function answering epoch ms');
  const ms = Math.floor((options.now ?? Date.now)());
  if (!Number.isSafeInteger(ms) || ms < 0)
    throw new InvalidInputError('Clock returned an invalid time');
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  // 48-bit big-endian timestamp
  bytes[0] = Math.floor(ms / 2 ** 40) & 0xff;
  bytes[1] = Math.floor(ms / 2 ** 32) & 0xff;
  bytes[2] = Math.floor(ms / 2 ** 24) & 0xff;
  bytes[3] = Math.floor(ms / 2 ** 16) & 0xff;
  bytes[4] = Math.floor(ms / 2 ** 8) & 0xff;
  bytes[5] = ms & 0xff;
  bytes[6] = ((bytes[6] as number) & 0x0f) | 0x70;
  bytes[8] = ((bytes[8] as number) & 0x3f) | 0x80;
  let hex = '';
  for (const byte of bytes) hex += byte.toString(16).padStart(2, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * A deterministic idempotency key from structured parts: SHA-256 over their canonical JSON.
 * Parts a naive `user:prompt:model` join would confuse (`["a:b","c"]` vs `["a","b:c"]`) give
 * different keys. The result is 64 lowercase hex characters, optionally after `prefix`.
 *
 * @throws NotCanonicalError when a part cannot be represented in canonical JSON
 */
export function deriveKey(parts: JsonValue, options: { prefix?: string } = {}): string {
  const digest = digestParts('idem/derived-key/v1', [['parts', canonicalJson(parts)]]);
  const key = `${options.prefix ?? ''}${digest}`;
  validateKey(key);
  return key;
}

/**
 * The `originId` of an execution: the first 32 hex characters of a digest of the storage key
 * and the store's origin token (see `IdempotencyStore.acquire`).
 * @internal
 */
export function originIdOf(storageKey: string, origin: string): string {
  if (typeof origin !== 'string' || origin.length === 0) {
    throw new InvalidInputError(
      'The store answered the acquisition without an origin token: it does not implement the origin of the store contract (see IdempotencyStore.acquire), so no originId can be given',
    );
  }
  return digestParts('idem/origin-id/v1', [
    ['key', storageKey],
    ['origin', origin],
  ]).slice(0, 32);
}

/**
 * The key of one item of a batch: derived from the batch id and the item's index (a number)
 * or its own key (a string). Re-running the same batch gives each item the same key.
 */
export function batchItemKey(batchId: string, item: number | string): string {
  if (typeof batchId !== 'string' || batchId.length === 0) {
    throw new InvalidInputError('batchId must be a non-empty string');
  }
  if (typeof item === 'number' && !(Number.isSafeInteger(item) && item >= 0)) {
    throw new InvalidInputError('A batch item index must be a non-negative integer');
  }
  return deriveKey({
    batch: batchId,
    item: typeof item === 'number' ? { index: item } : { key: item },
  });
}

/**
 * What a key is unique within: usually the tenant or principal plus the operation. Any
 * canonical-JSON value; `['tenant-1', 'POST /charges']` is typical.
 */
export type Scope = JsonValue;

/**
 * The storage key for a client key within a scope: 64 hex characters whatever the client
 * sent, so stores see bounded keys and the same client key in two scopes never meets.
 */
export function deriveStorageKey(scope: Scope, key: string): string {
  validateKey(key);
  // `digestParts('idem/storage-key/v1', [['scope', canonicalJson(scope)], ['key', key]])`,
  // its fixed parts written once.
  return storageKeyDigest(scope === null ? 'null' : canonicalJson(scope), key);
}
