import { InvalidInputError, StoreUnavailableError } from '../errors.js';
import type {
  DeleteExpectation,
  DeleteResult,
  ForceReleaseExpectation,
  ForceReleaseResult,
  RecordStatus,
  StoreAdmin,
} from '../store.js';
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

/**
 * What a forced release did: nothing (`not_found`, `not_in_progress`, or `changed`: the
 * in-progress record is not the one expected, with its owner and fence) or the new fence.
 */
export type AdminReleaseAnswer =
  | 'not_found'
  | 'not_in_progress'
  | { changed: true; owner: string | Uint8Array; fence: ServiceNumber }
  | { fence: ServiceNumber; previousOwner: string | Uint8Array };

/**
 * What a delete did: whether a live record was there (deleted now), or `changed`: the live
 * record does not hold the status, owner or fence expected, with what it holds.
 */
export type AdminDeleteAnswer =
  | boolean
  | { changed: true; status: RecordStatus; owner: string | Uint8Array; fence: ServiceNumber };

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
   * When the live record is `in_progress` (and, with `expected`, holds its owner and/or
   * fence, checked in the same atomic step as the write): make it a `released` tombstone
   * with fence + 1, `owner`, `leaseUntil = now`, `expiresAt` kept, and answer the new fence
   * and the owner it replaced. Else change nothing and answer why (`changed`, with the
   * record's owner and fence, when only the expectation failed). The kit has checked
   * `expected`; it is never an empty object.
   */
  forceRelease(
    key: string,
    owner: string,
    expected?: ForceReleaseExpectation,
  ): Promise<AdminReleaseAnswer>;
  /**
   * Remove the record (a tombstone holding only the fence may take its place, owned by
   * `tombstoneOwner`); answer whether a live record was there. With `expected`, a live
   * record that does not hold its status, owner and/or fence (checked in the same atomic
   * step as the write) is left as it is, answered `changed` with them. The kit has checked
   * `expected`; it is never an empty object.
   */
  delete(
    key: string,
    tombstoneOwner: string,
    expected?: DeleteExpectation,
  ): Promise<AdminDeleteAnswer>;
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
    async forceRelease(key, expected): Promise<ForceReleaseResult> {
      const k = checked(key);
      const expect = expectation('forceRelease', expected);
      const answer = await call('forceRelease', () =>
        primitives.forceRelease(k, forcedReleaseOwner(), expect),
      );
      if (typeof answer === 'string') return { ok: false, reason: answer };
      if ('changed' in answer) return { ok: false, ...changedAnswer(answer, expect) };
      const released = {
        fence: count('fence', answer.fence),
        previousOwner: text(answer.previousOwner),
      };
      // A store that ignores the expectation released another execution: say so, loudly.
      if (
        expect &&
        !meetsExpectation({ owner: released.previousOwner, fence: released.fence - 1 }, expect)
      )
        throw new StoreUnavailableError(
          `The store released owner ${released.previousOwner} at fence ${released.fence - 1}, not the execution expected: it does not honour forceRelease's expectation`,
        );
      return { ok: true, ...released };
    },
    async delete(key, expected): Promise<DeleteResult> {
      const k = checked(key);
      const expect = expectation('delete', expected);
      const answer = await call('delete', () => primitives.delete(k, forcedReleaseOwner(), expect));
      if (typeof answer === 'boolean') return { deleted: answer };
      const status = answer.status;
      if (!RECORD_STATUSES.includes(status))
        throw new StoreUnavailableError(`The store answered a bad status: ${String(status)}`);
      return { deleted: false, ...changedAnswer(answer, expect), status };
    },
  };
}

/** An owner token as the service answered it (bytes are UTF-8). */
const text = (value: string | Uint8Array): string =>
  typeof value === 'string' ? value : new TextDecoder().decode(value);

const RECORD_STATUSES: readonly RecordStatus[] = ['in_progress', 'completed', 'released'];

/**
 * A `changed` answer of the service, checked: its owner and fence, unless they meet the
 * expectation (a store answering `changed` for the very record expected is broken).
 */
function changedAnswer(
  answer: { owner: string | Uint8Array; fence: ServiceNumber; status?: RecordStatus },
  expect: DeleteExpectation | undefined,
): { reason: 'changed'; owner: string; fence: number } {
  const found = { owner: text(answer.owner), fence: count('fence', answer.fence) };
  if (expect && meetsExpectation({ ...found, status: answer.status }, expect))
    throw new StoreUnavailableError(
      `The store answered changed for the record it expected (owner ${found.owner}, fence ${found.fence})`,
    );
  return { reason: 'changed', ...found };
}

/**
 * The expectation of a forced release or a delete, checked: `undefined` when none was given
 * (or an object without any of its fields), else `InvalidInputError` for an owner that is
 * not a non-empty string, a fence that is not a whole number from 0, or (delete's) a status
 * that is not a record status. A forced release takes no status (it only ever releases an
 * in-progress record): one given is ignored.
 */
function expectation(
  operation: 'forceRelease' | 'delete',
  expected: unknown,
): DeleteExpectation | undefined {
  if (expected === undefined) return undefined;
  const fields = operation === 'delete' ? '{ status?, owner?, fence? }' : '{ owner?, fence? }';
  if (typeof expected !== 'object' || expected === null)
    throw new InvalidInputError(`${operation} expects an object ${fields}`);
  const { status, owner, fence } = expected as Record<string, unknown>;
  const checked: DeleteExpectation = {};
  if (operation === 'delete' && status !== undefined) {
    if (!RECORD_STATUSES.includes(status as RecordStatus))
      throw new InvalidInputError(
        `The expected status must be one of ${RECORD_STATUSES.join(', ')}`,
      );
    checked.status = status as RecordStatus;
  }
  if (owner !== undefined) checked.owner = checkStoreString('expected owner', owner);
  if (fence !== undefined) {
    if (!(typeof fence === 'number' && Number.isSafeInteger(fence) && fence >= 0))
      throw new InvalidInputError('The expected fence must be a whole number from 0');
    checked.fence = fence;
  }
  return Object.keys(checked).length === 0 ? undefined : checked;
}

/**
 * Whether a record with this status, owner and fence is the one a forced release or a
 * delete expects (always, without an expectation): for a store that decides in JavaScript
 * inside its atomic step (the memory store, a read-then-conditional-write).
 */
export function meetsExpectation(
  found: { owner: string; fence: number; status?: RecordStatus | undefined },
  expected: DeleteExpectation | undefined,
): boolean {
  return (
    (expected?.status === undefined || expected.status === found.status) &&
    (expected?.owner === undefined || expected.owner === found.owner) &&
    (expected?.fence === undefined || expected.fence === found.fence)
  );
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
