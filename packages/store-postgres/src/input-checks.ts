import { InvalidInputError } from '@idem/core';

/** Longest storage key (with its prefix) the store accepts, in characters. Core derives 64. */
export const MAX_KEY_LENGTH = 512;
/** Longest owner token, in characters. Core's are 36. */
export const MAX_OWNER_LENGTH = 256;
/** Longest fingerprint, in characters. Core's are 64. */
export const MAX_FINGERPRINT_LENGTH = 1024;

/**
 * A string PostgreSQL stores as it is: well-formed (node-postgres sends UTF-8, where every
 * lone surrogate becomes U+FFFD, so two different malformed strings would be one) and without
 * NUL (a `text` value cannot hold it: the server would refuse the call after the fact).
 */
function storable(value: unknown, max: number, allowEmpty: boolean): value is string {
  return (
    typeof value === 'string' &&
    (allowEmpty || value.length > 0) &&
    value.length <= max &&
    value.isWellFormed() &&
    !value.includes('\0')
  );
}

export function checkKey(key: unknown): string {
  if (!storable(key, MAX_KEY_LENGTH, false))
    throw new InvalidInputError(
      `A storage key must be a non-empty, well-formed string without NUL, at most ${MAX_KEY_LENGTH} characters with the prefix`,
    );
  return key;
}

export function checkOwner(owner: unknown): string {
  if (!storable(owner, MAX_OWNER_LENGTH, false))
    throw new InvalidInputError(
      `An owner must be a non-empty, well-formed string without NUL, at most ${MAX_OWNER_LENGTH} characters`,
    );
  return owner;
}

export function checkFingerprint(fingerprint: unknown): string {
  if (!storable(fingerprint, MAX_FINGERPRINT_LENGTH, true))
    throw new InvalidInputError(
      `A fingerprint must be a well-formed string without NUL, at most ${MAX_FINGERPRINT_LENGTH} characters`,
    );
  return fingerprint;
}

export function checkKeyPrefix(prefix: unknown): string {
  if (!storable(prefix, MAX_KEY_LENGTH - 64, true))
    throw new InvalidInputError(
      `keyPrefix must be a well-formed string without NUL, at most ${MAX_KEY_LENGTH - 64} characters`,
    );
  return prefix;
}

/**
 * A duration in ms as a statement parameter: finite, non-negative, at most
 * `Number.MAX_SAFE_INTEGER` (no deadline could hold more), rounded up to a whole ms.
 */
export function duration(name: string, value: unknown): string {
  if (
    !(
      typeof value === 'number' &&
      Number.isFinite(value) &&
      value >= 0 &&
      value <= Number.MAX_SAFE_INTEGER
    )
  ) {
    throw new InvalidInputError(
      `${name} must be a non-negative number of ms, at most Number.MAX_SAFE_INTEGER`,
    );
  }
  return String(Math.ceil(value));
}

// setTimeout fires at once past 2^31 - 1 ms: a longer time limit would fail every call.
const MAX_TIMER_MS = 2_147_483_647;

/** A positive whole number of ms for an option that drives a timer. */
export function positiveMs(name: string, value: unknown): number {
  if (
    !(
      typeof value === 'number' &&
      Number.isSafeInteger(value) &&
      value > 0 &&
      value <= MAX_TIMER_MS
    )
  )
    throw new InvalidInputError(
      `${name} must be a positive integer number of ms, at most ${MAX_TIMER_MS}`,
    );
  return value;
}
