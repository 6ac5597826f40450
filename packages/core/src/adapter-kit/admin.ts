import { InvalidInputError, StoreUnavailableError } from '../errors.js';
import type { ForceReleaseResult, RecordStatus, StoreAdmin } from '../store.js';
import { checkStoreString, forcedReleaseOwner } from './input-checks.js';
import { inspectionOf } from './owner-writes.js';
import { guardStoreCall, type StoreErrorRules } from './store-errors.js';

/** A number as a service answers it: a JS number, a bigint, or decimal text (SQL `bigint`). */
export type ServiceNumber = number | bigint | string;

/** A record as a store's admin read finds it (expired or not: the kit decides by `now`). */
export interface AdminRecordRead {
  status: RecordStatus;
  fingerprint: string;
  owner: string;
  fence: ServiceNumber;
  leaseUntil: ServiceNumber;
  expiresAt: ServiceNumber;
  /** Bytes of the stored outcome (as stored); `null` or absent when none. */
  outcomeBytes?: ServiceNumber | null;
}

/** What a forced release did: nothing (`not_found`, `not_in_progress`) or the new fence. */
export type AdminReleaseAnswer =
  | 'not_found'
  | 'not_in_progress'
  | { fence: ServiceNumber; previousOwner: string | Uint8Array };

/**
 * A store's admin operations as primitives: each one atomic step of the service, given a key
 * the kit has checked. {@link createStoreAdmin} builds the `StoreAdmin` around them.
 */
export interface AdminPrimitives {
  /** Throws `InvalidInputError` for a key this store cannot hold (after the kit's string check). */
  checkKey?(key: string): void;
  /** The store's clock and the record at `key`, if any (the kit hides an expired one). */
  read(key: string): Promise<{ now: ServiceNumber; record?: AdminRecordRead | undefined }>;
  /**
   * When the live record is `in_progress`: make it a `released` tombstone with fence + 1,
   * `owner`, `leaseUntil = now`, `expiresAt` kept, and answer the new fence and the owner it
   * replaced. Else change nothing and answer why.
   */
  forceRelease(key: string, owner: string): Promise<AdminReleaseAnswer>;
  /**
   * Remove the record (a tombstone holding only the fence may take its place, owned by
   * `tombstoneOwner`); answer whether a live record was there.
   */
  delete(key: string, tombstoneOwner: string): Promise<boolean>;
  /** When given, every primitive's failure becomes a typed store error with these rules. */
  errors?: StoreErrorRules;
}

/**
 * The `StoreAdmin` of a store from its primitives: the kit checks the key before anything is
 * sent, mints the owner token no executor holds, hides expired records, builds the
 * `inspect`, `forceRelease` and `delete` answers, checks the numbers the service answered,
 * and (with `errors`) wraps failures like the store's own calls.
 */
export function createStoreAdmin(primitives: AdminPrimitives): StoreAdmin {
  const checked = (key: unknown): string => {
    if (typeof key !== 'string') throw new InvalidInputError('An admin call needs a string key');
    // Every store alike: no record is ever stored under an empty or malformed key.
    checkStoreString('key', key);
    primitives.checkKey?.(key);
    return key;
  };
  const { errors } = primitives;
  const call = <T>(operation: string, run: () => Promise<T>): Promise<T> =>
    errors ? guardStoreCall(errors, operation, run) : run();
  return {
    async inspect(key) {
      const k = checked(key);
      const { now, record } = await call('inspect', () => primitives.read(k));
      const at = time('now', now);
      if (!record) return undefined;
      const expiresAt = time('expiresAt', record.expiresAt);
      if (!(at < expiresAt)) return undefined;
      const inspection = {
        status: record.status,
        fingerprint: record.fingerprint,
        owner: record.owner,
        fence: count('fence', record.fence),
        leaseUntil: time('leaseUntil', record.leaseUntil),
        expiresAt,
      };
      return inspectionOf(inspection, at, count('outcomeBytes', record.outcomeBytes ?? 0));
    },
    async forceRelease(key): Promise<ForceReleaseResult> {
      const k = checked(key);
      const answer = await call('forceRelease', () =>
        primitives.forceRelease(k, forcedReleaseOwner()),
      );
      if (typeof answer === 'string') return { ok: false, reason: answer };
      const { previousOwner } = answer;
      return {
        ok: true,
        fence: count('fence', answer.fence),
        previousOwner:
          typeof previousOwner === 'string'
            ? previousOwner
            : new TextDecoder().decode(previousOwner),
      };
    },
    async delete(key) {
      const k = checked(key);
      return { deleted: await call('delete', () => primitives.delete(k, forcedReleaseOwner())) };
    },
  };
}

/** A deadline or clock reading the service answered: a finite number, else the store is broken. */
function time(name: string, value: ServiceNumber): number {
  const n = Number(value);
  if (!Number.isFinite(n))
    throw new StoreUnavailableError(`The store answered a bad ${name}: ${value}`);
  return n;
}

/** A fence or size the service answered: a non-negative safe integer, else the store is broken. */
function count(name: string, value: ServiceNumber): number {
  const n = Number(value);
  if (!(Number.isSafeInteger(n) && n >= 0))
    throw new StoreUnavailableError(`The store answered a bad ${name}: ${value}`);
  return n;
}
