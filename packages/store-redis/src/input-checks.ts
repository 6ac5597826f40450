import { InvalidInputError } from '@idem/core';

// `isWellFormed` (Node 20) rather than a \p{Cs} regex: these checks run on every call.
const wellFormed = (value: string): boolean => value.isWellFormed();

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
 * {@link duration} for a value that repeats from call to call (a lease, a retention): the
 * text of the last one is kept, so a steady stream of calls formats no number.
 */
export function durationText(name: string): (value: number) => string {
  let last = Number.NaN;
  let text = '';
  return (value) => {
    if (value !== last) {
      text = duration(name, value);
      last = value;
    }
    return text;
  };
}

const hasBrace = (value: string): boolean => value.includes('{') || value.includes('}');

/**
 * An owner token: a non-empty, well-formed string. ioredis sends strings as UTF-8, where
 * every lone surrogate becomes U+FFFD, so two different malformed tokens (or two empty
 * ones) would compare equal in a script, and each caller would be answered as the other's
 * own acquisition.
 */
export function checkOwner(owner: unknown): string {
  if (typeof owner !== 'string' || owner.length === 0 || !wellFormed(owner)) {
    throw new InvalidInputError('An owner must be a non-empty, well-formed string');
  }
  return owner;
}

/**
 * A fingerprint: a well-formed string (empty allowed). A malformed one would come back from
 * Redis as another string (U+FFFD for each lone surrogate), and never match its own retry.
 */
export function checkFingerprint(fingerprint: unknown): string {
  if (typeof fingerprint !== 'string' || !wellFormed(fingerprint))
    throw new InvalidInputError('A fingerprint must be a well-formed string');
  return fingerprint;
}

/**
 * A storage key: non-empty (an empty hash tag `{}` would hash the whole key, splitting a
 * record from its fence memory across Cluster slots), well-formed (two malformed keys would
 * be one Redis key), without braces (they would change the hash tag).
 */
export function checkStorageKey(storageKey: unknown): string {
  if (typeof storageKey !== 'string' || storageKey.length === 0 || !wellFormed(storageKey))
    throw new InvalidInputError('A storage key must be a non-empty, well-formed string');
  // Keys derived by core are hex.
  if (hasBrace(storageKey)) throw new InvalidInputError('A storage key must not contain { or }');
  return storageKey;
}

/** A key prefix: a well-formed string without braces (a brace would become the hash tag). */
export function checkKeyPrefix(prefix: unknown): string {
  if (typeof prefix !== 'string' || !wellFormed(prefix))
    throw new InvalidInputError('keyPrefix must be a well-formed string');
  if (hasBrace(prefix)) throw new InvalidInputError('keyPrefix must not contain { or }');
  return prefix;
}
