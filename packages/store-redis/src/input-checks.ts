import { InvalidInputError } from '@idem/core';

/** A lone surrogate: a string holding one is not well-formed UTF-16. */
const LONE_SURROGATE = /\p{Cs}/u;
const BRACES = /[{}]/;

/**
 * A duration in ms as a script argument. Refuses (before anything is sent) a value that is
 * not finite, negative, or past `Number.MAX_SAFE_INTEGER`, which no deadline could hold:
 * Redis would refuse the key expiry after the record was written, leaving it without one.
 */
export function duration(name: string, value: number): string {
  if (!(Number.isFinite(value) && value >= 0 && value <= Number.MAX_SAFE_INTEGER)) {
    throw new InvalidInputError(
      `${name} must be a non-negative number of ms, at most Number.MAX_SAFE_INTEGER`,
    );
  }
  return String(Math.ceil(value));
}

/**
 * An owner token: a non-empty, well-formed string. ioredis sends strings as UTF-8, where
 * every lone surrogate becomes U+FFFD, so two different malformed tokens (or two empty
 * ones) would compare equal in a script, and each caller would be answered as the other's
 * own acquisition.
 */
export function checkOwner(owner: unknown): string {
  if (typeof owner !== 'string' || owner.length === 0 || LONE_SURROGATE.test(owner)) {
    throw new InvalidInputError('An owner must be a non-empty, well-formed string');
  }
  return owner;
}

/**
 * A fingerprint: a well-formed string (empty allowed). A malformed one would come back from
 * Redis as another string (U+FFFD for each lone surrogate), and never match its own retry.
 */
export function checkFingerprint(fingerprint: unknown): string {
  if (typeof fingerprint !== 'string' || LONE_SURROGATE.test(fingerprint))
    throw new InvalidInputError('A fingerprint must be a well-formed string');
  return fingerprint;
}

/**
 * A storage key: non-empty (an empty hash tag `{}` would hash the whole key, splitting a
 * record from its fence memory across Cluster slots), well-formed (two malformed keys would
 * be one Redis key), without braces (they would change the hash tag).
 */
export function checkStorageKey(storageKey: unknown): string {
  if (typeof storageKey !== 'string' || storageKey.length === 0 || LONE_SURROGATE.test(storageKey))
    throw new InvalidInputError('A storage key must be a non-empty, well-formed string');
  // Keys derived by core are hex.
  if (BRACES.test(storageKey)) throw new InvalidInputError('A storage key must not contain { or }');
  return storageKey;
}

/** A key prefix: a well-formed string without braces (a brace would become the hash tag). */
export function checkKeyPrefix(prefix: unknown): string {
  if (typeof prefix !== 'string' || LONE_SURROGATE.test(prefix))
    throw new InvalidInputError('keyPrefix must be a well-formed string');
  if (BRACES.test(prefix)) throw new InvalidInputError('keyPrefix must not contain { or }');
  return prefix;
}
