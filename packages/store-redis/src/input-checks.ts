import { checkStoreString, durationText as durationAsText } from '@idem/core';

/**
 * A duration in ms as a script argument ({@link durationAsText}): refuses (before anything
 * is sent) a value no deadline could hold, since Redis would refuse the key expiry after the
 * record was written, leaving it without one.
 */
export const duration = durationAsText;

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

const noBraces = {
  test: (value: string) => !value.includes('{') && !value.includes('}'),
  says: 'without { or } (they would change the hash tag)',
};

/**
 * An owner token: a non-empty, well-formed string. ioredis sends strings as UTF-8, where
 * every lone surrogate becomes U+FFFD, so two different malformed tokens (or two empty
 * ones) would compare equal in a script, and each caller would be answered as the other's
 * own acquisition.
 */
export const checkOwner = (owner: unknown): string => checkStoreString('An owner', owner);

/**
 * A fingerprint: a well-formed string (empty allowed). A malformed one would come back from
 * Redis as another string (U+FFFD for each lone surrogate), and never match its own retry.
 */
export const checkFingerprint = (fingerprint: unknown): string =>
  checkStoreString('A fingerprint', fingerprint, { allowEmpty: true });

/**
 * A storage key: non-empty (an empty hash tag `{}` would hash the whole key, splitting a
 * record from its fence memory across Cluster slots), well-formed (two malformed keys would
 * be one Redis key), without braces (they would change the hash tag). Core's keys are hex.
 */
export const checkStorageKey = (storageKey: unknown): string =>
  checkStoreString('A storage key', storageKey, { extra: noBraces });

/** A key prefix: a well-formed string without braces (a brace would become the hash tag). */
export const checkKeyPrefix = (prefix: unknown): string =>
  checkStoreString('keyPrefix', prefix, { allowEmpty: true, extra: noBraces });
