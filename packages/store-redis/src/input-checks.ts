import { checkStoreString, durationText as durationAsText, InvalidInputError } from '@idem/core';
import type { Cluster, Redis } from 'ioredis';

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
export const checkOwner = (owner: unknown): string =>
  checkStoreString('An owner', owner, { maxLength: MAX_OWNER_LENGTH });

/**
 * Longest storage key (without the prefix) and owner token, in UTF-16 code units. Core's keys
 * are 64 and its owners 36; the bound keeps a direct caller from writing megabytes of key
 * names and record bytes (the memory store's limit, as DynamoDB's 1024 bytes).
 */
export const MAX_STORAGE_KEY_LENGTH = 1024;
/** Longest owner token, in UTF-16 code units; see {@link MAX_STORAGE_KEY_LENGTH}. */
export const MAX_OWNER_LENGTH = 1024;

/**
 * A fingerprint: a well-formed string (empty allowed). A malformed one would come back from
 * Redis as another string (U+FFFD for each lone surrogate), and never match its own retry.
 */
export const checkFingerprint = (fingerprint: unknown): string =>
  checkStoreString('A fingerprint', fingerprint, { allowEmpty: true });

/**
 * A storage key: non-empty (an empty hash tag `{}` would hash the whole key, splitting a
 * record from its fence memory across Cluster slots), well-formed (two malformed keys would
 * be one Redis key), without braces (they would change the hash tag), at most
 * {@link MAX_STORAGE_KEY_LENGTH} UTF-16 code units. Core's keys are hex.
 */
export const checkStorageKey = (storageKey: unknown): string =>
  checkStoreString('A storage key', storageKey, {
    extra: noBraces,
    maxLength: MAX_STORAGE_KEY_LENGTH,
  });

/**
 * Longest `keyPrefix`, in UTF-16 code units (`string.length`: an emoji counts two). Every record key and fence memory key carries it, so
 * storage keys stay bounded in length whatever the options (a 1 MiB prefix made each storage
 * key cost 2 MiB of key names).
 */
export const MAX_KEY_PREFIX_LENGTH = 1024;

/**
 * A key prefix: a well-formed string without braces (a brace would become the hash tag), at
 * most {@link MAX_KEY_PREFIX_LENGTH} UTF-16 code units.
 */
export const checkKeyPrefix = (prefix: unknown): string =>
  checkStoreString('keyPrefix', prefix, {
    allowEmpty: true,
    extra: noBraces,
    maxLength: MAX_KEY_PREFIX_LENGTH,
  });

/**
 * The store's client: a real ioredis `Redis` or `Cluster` (either major the package supports),
 * built without `stringNumbers`. `InvalidInputError` otherwise, at creation, for what would
 * else fail at every call as if Redis were down:
 * - a `Pipeline` (`redis.pipeline()`, `redis.multi()`) has the client's methods but sends
 *   nothing until `exec()`, and a stub with `defineCommand` has none of them;
 * - with `stringNumbers: true` (on a `Cluster`, in `redisOptions`) integer replies come back
 *   as strings, so each acquire script ran (the record written, the key held for a lease)
 *   before its reply could be read.
 */
export function checkClient(client: unknown): Redis | Cluster {
  const candidate = client as Partial<Record<string, unknown>> | null | undefined;
  if (
    typeof candidate !== 'object' ||
    candidate === null ||
    candidate.isPipeline === true ||
    typeof candidate.isCluster !== 'boolean' ||
    typeof candidate.status !== 'string' ||
    typeof candidate.defineCommand !== 'function' ||
    typeof candidate.sendCommand !== 'function' ||
    typeof candidate.options !== 'object' ||
    candidate.options === null
  ) {
    throw new InvalidInputError(
      'createRedisStore needs an ioredis Redis or Cluster client (not a pipeline, a multi or a stub)',
    );
  }
  const options = candidate.options as {
    stringNumbers?: unknown;
    redisOptions?: { stringNumbers?: unknown };
  };
  if (options.stringNumbers === true || options.redisOptions?.stringNumbers === true) {
    throw new InvalidInputError(
      `createRedisStore needs a client without stringNumbers${candidate.isCluster ? ' (redisOptions.stringNumbers)' : ''}: the store reads integer replies as numbers`,
    );
  }
  return client as Redis | Cluster;
}
