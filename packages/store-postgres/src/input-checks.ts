import { checkStoreString, checkTimerMs, durationText } from '@idem/core';

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
const storable = (name: string, value: unknown, maxLength: number, allowEmpty = false) =>
  checkStoreString(name, value, { maxLength, allowEmpty, allowNul: false });

export const checkKey = (key: unknown): string =>
  storable('A storage key (with the prefix)', key, MAX_KEY_LENGTH);

export const checkOwner = (owner: unknown): string => storable('An owner', owner, MAX_OWNER_LENGTH);

export const checkFingerprint = (fingerprint: unknown): string =>
  storable('A fingerprint', fingerprint, MAX_FINGERPRINT_LENGTH, true);

export const checkKeyPrefix = (prefix: unknown): string =>
  storable('keyPrefix', prefix, MAX_KEY_LENGTH - 64, true);

/**
 * A duration in ms as a statement parameter: finite, non-negative, at most
 * `Number.MAX_SAFE_INTEGER` (no deadline could hold more), rounded up to a whole ms.
 */
export const duration = durationText;

/** A positive whole number of ms for an option that drives a timer (at most 2^31 - 1). */
export const positiveMs = checkTimerMs;
