import {
  type AcquireInput,
  type AcquireResult,
  answersSynchronously,
  type Clock,
  type CompleteInput,
  checkClock,
  checkDuration,
  checkObject,
  checkOutcome,
  checkPositiveInteger,
  type ExtendInput,
  type IdempotencyStore,
  InvalidInputError,
  NOT_OWNER,
  OWNED,
  type OwnerWriteResult,
  type ReleaseInput,
  readClock,
  type StoreAdmin,
  type StoreCapabilities,
  type StoredRecord,
  StoreFullError,
  systemClock,
} from '@idem/core';
import { type HeldOutcome, hold, holds, release, type ViewBuffer, viewOf } from './held-outcome.js';
import { checkString, copied, sweepInterval } from './input.js';
import { createMemoryAdmin } from './memory-admin.js';
import {
  costOf,
  type HeldRecord,
  MARKER_OUTCOME_BYTES,
  newSlot,
  OUTCOME_OVERHEAD_BYTES,
  RECORD_OVERHEAD_BYTES,
  RecordTable,
} from './record-table.js';

const MiB = 1024 * 1024;
// Any finite duration is accepted: a deadline past it is simply never reached (Infinity).
const ANY_FINITE = Number.MAX_VALUE;

/** Default of {@link MemoryStoreOptions.maxBytes}: 128 MiB. */
export const DEFAULT_MAX_BYTES = 128 * MiB;
/** Default of {@link MemoryStoreOptions.maxOutcomeBytes}: 8 MiB. */
export const DEFAULT_MAX_OUTCOME_BYTES = 8 * MiB;
/** Default of {@link MemoryStoreOptions.maxEntries}. */
export const DEFAULT_MAX_ENTRIES = 100_000;

/** Options of {@link createMemoryStore}. */
export interface MemoryStoreOptions {
  /**
   * Clock that decides expiry. A call made while it answers anything but a finite number
   * MUST fail with `InvalidInputError` and change nothing. @default systemClock
   */
  clock?: Clock;
  /**
   * Most records kept, whatever their status. See {@link MemoryStoreOptions.maxBytes} for
   * what happens when the store is full.
   * @default 100_000
   */
  maxEntries?: number;
  /**
   * Most bytes accounted to records: each record counts its strings, an estimated 768 bytes
   * of overhead, and its outcome bytes plus 512 (an in-progress record reserves room for a
   * 1 KiB outcome). When a new record or an outcome does not fit (in entries or bytes), the store
   * frees room in this order: expired records, then released tombstones, then in-progress
   * records whose lease has passed. It MUST NOT drop a completed record within its
   * retention or a live lease: when only those remain, `acquire` and `complete` throw
   * `StoreFullError` and change nothing. A `complete` with an outcome of at most 1 KiB
   * never fails for room.
   * @default 134_217_728 (128 MiB)
   */
  maxBytes?: number;
  /**
   * Largest encoded outcome accepted, in bytes; a larger one gets `OutcomeTooLargeError`
   * before anything is written. At most `maxBytes`.
   * @default 8_388_608 (8 MiB), or `maxBytes` when that is smaller
   */
  maxOutcomeBytes?: number;
  /**
   * Interval of the sweep that frees expired records, in ms: `0` disables it, else 1 to
   * 2,147,483,647 (a longer timer would fire every 1 ms). @default 60_000
   */
  sweepIntervalMs?: number;
}

/** An in-process store; see {@link createMemoryStore}. */
export interface MemoryStore extends IdempotencyStore {
  /** Number of records held, expired ones not yet swept included. */
  readonly size: number;
  /** Bytes accounted to the records held (see `maxBytes`); never more than `maxBytes`. */
  readonly bytes: number;
  /** Removes expired records now; returns how many. */
  sweep(): number;
  /** Stops the sweep timer. The store keeps working for calls made after. */
  close(): Promise<void>;
  /** Operator actions; a deleted record's fence is kept in the store's fence floor. */
  readonly admin: StoreAdmin;
}

/** The acquire's Latin-1 form: a found outcome held as a string is answered as that string. */
const LATIN1 = 'latin1';

/**
 * The record as callers get it: a copy, its outcome bytes a fresh array (`bytes`: or a view
 * the engine reads at once, see the acquire's view form).
 */
function clone(
  record: HeldRecord,
  bytes: ((held: HeldOutcome) => Uint8Array) | typeof LATIN1 = release,
): StoredRecord {
  const copy: StoredRecord & { outcomeLatin1?: string } = {
    status: record.status,
    fingerprint: record.fingerprint,
    owner: record.owner,
    fence: record.fence,
    leaseUntil: record.leaseUntil,
    expiresAt: record.expiresAt,
  };
  const held = record.outcome;
  if (held !== undefined) {
    // The Latin-1 form hands out the held string itself: a string cannot be changed.
    if (bytes !== LATIN1) copy.outcome = bytes(held);
    else if (typeof held === 'string') copy.outcomeLatin1 = held;
    else copy.outcome = release(held);
  }
  return copy;
}

/**
 * Smallest `maxBytes` accepted: one in-progress record with 1 KiB of strings. (A record with
 * longer ones may not fit a store this small: its acquire answers `StoreFullError`.)
 */
const MIN_MAX_BYTES = RECORD_OVERHEAD_BYTES + OUTCOME_OVERHEAD_BYTES + MARKER_OUTCOME_BYTES + 1024;

/** Checks the key and owner of an owner-checked write and its retention. */
function checkWrite(call: string, input: unknown): asserts input is ReleaseInput {
  checkObject(call, input);
  checkString('key', input.key);
  checkString('owner', input.owner);
  checkDuration('retentionMs', input.retentionMs, ANY_FINITE);
}

/**
 * Creates a store that keeps records in this process's memory: the embedded default for
 * one server, development and tests. Every operation is synchronous inside, hence atomic
 * with respect to every other call. Nothing is shared between processes. Memory is bounded
 * by `maxEntries` and `maxBytes`; a full store answers `StoreFullError` rather than drop a
 * live record. A call with bad input (a key or owner that is not a string of 1 to 1,024
 * characters, a fingerprint over 1,024, a duration that is not a finite non-negative number,
 * an outcome that is not a `Uint8Array`) MUST throw `InvalidInputError` before changing
 * anything. Outcomes and strings are copied in and records copied out.
 */
export function createMemoryStore(options: MemoryStoreOptions = {}): MemoryStore {
  const clock = checkClock(options.clock ?? systemClock);
  const maxEntries = checkPositiveInteger('maxEntries', options.maxEntries ?? DEFAULT_MAX_ENTRIES);
  const maxBytes = checkPositiveInteger('maxBytes', options.maxBytes ?? DEFAULT_MAX_BYTES);
  if (maxBytes < MIN_MAX_BYTES) {
    throw new InvalidInputError(`maxBytes must be at least ${MIN_MAX_BYTES}`);
  }
  const maxOutcomeBytes = checkPositiveInteger(
    'maxOutcomeBytes',
    options.maxOutcomeBytes ?? Math.min(DEFAULT_MAX_OUTCOME_BYTES, maxBytes),
  );
  if (maxOutcomeBytes > maxBytes) {
    throw new InvalidInputError('maxOutcomeBytes must not exceed maxBytes');
  }
  const table = new RecordTable(maxEntries, maxBytes);
  const capabilities: StoreCapabilities = { clock: 'injectable', maxOutcomeBytes };

  const full = (what: string) =>
    new StoreFullError(
      `Memory store is full: ${what} does not fit beside the live leases and completed ` +
        `records within retention (${table.size} of ${maxEntries} records, ${table.bytes} of ${maxBytes} bytes)`,
    );

  const sweep = () => table.sweep(readClock(clock));
  const interval = sweepInterval(options.sweepIntervalMs ?? 60_000);
  let timer: ReturnType<typeof setInterval> | undefined;
  if (interval > 0) {
    timer = setInterval(() => {
      const now = clock.now();
      if (Number.isFinite(now)) table.sweep(now); // a bad reading waits for the next tick
    }, interval);
    timer.unref?.();
  }

  // The buffer the acquire's view form writes a found outcome into (see `viewOf`).
  const replayView: ViewBuffer = { bytes: undefined, plain: undefined };
  const replayBytes = (held: HeldOutcome) => viewOf(held, replayView);
  /**
   * `acquire`, a found record's outcome written out by `bytes`. `engine`: called through a
   * form only the engine calls (`view`, `latin1`), whose key and owner are strings it made
   * (a digest, its owner token) that share no memory with a caller's string: kept as they
   * are, not copied (the fingerprint, the caller's, is).
   */
  const acquire = (
    input: AcquireInput,
    bytes: ((held: HeldOutcome) => Uint8Array) | typeof LATIN1,
    engine: boolean,
  ): AcquireResult => {
    checkObject('acquire', input);
    checkString('key', input.key);
    checkString('owner', input.owner);
    checkString('fingerprint', input.fingerprint, true);
    checkDuration('leaseMs', input.leaseMs, ANY_FINITE);
    checkDuration('retentionMs', input.retentionMs, ANY_FINITE);
    const now = readClock(clock);
    const found = table.live(input.key, now);
    const leaseUntil = now + input.leaseMs;
    if (found) {
      const record = found.record;
      if (record.status === 'in_progress' && record.owner === input.owner) {
        // A redelivered acquire: the caller's own acquisition, renewed, fence unchanged.
        const expiresAt = Math.max(record.expiresAt, leaseUntil + input.retentionMs);
        table.update(found, 'in_progress', leaseUntil, expiresAt, record.outcome);
        return { kind: 'acquired', fence: record.fence, leaseUntil, takeover: false };
      }
      const isLive =
        (record.status === 'in_progress' && now < record.leaseUntil) ||
        record.status === 'completed';
      if (isLive) return { kind: 'found', record: clone(record, bytes), now };
    }
    // No record, a tombstone or a passed lease: the new record takes its place.
    const fence = (found ? found.record.fence : table.fenceFloor) + 1;
    const record: HeldRecord = {
      status: 'in_progress',
      fingerprint: copied(input.fingerprint),
      owner: engine ? input.owner : copied(input.owner),
      fence,
      leaseUntil,
      expiresAt: leaseUntil + input.retentionMs,
    };
    const slot = newSlot(engine ? input.key : copied(input.key), record);
    // Room is made around the record replaced: refused, it stays (its owner may complete).
    const room = found
      ? table.makeRoom(now, 0, slot.cost - found.cost, found)
      : table.makeRoom(now, 1, slot.cost);
    if (!room) throw full('a new record');
    if (found) table.remove(found);
    table.insert(slot);
    return {
      kind: 'acquired',
      fence,
      leaseUntil,
      takeover: found?.record.status === 'in_progress',
    };
  };

  return {
    capabilities,
    admin: createMemoryAdmin(table, clock),
    get size() {
      return table.size;
    },
    get bytes() {
      return table.bytes;
    },
    sweep,
    acquire: answersSynchronously((input: AcquireInput) => acquire(input, release, false), {
      // For the engine, which decodes a replayed outcome before anything else runs: the
      // bytes are a view of this store's reused buffer (the held outcome stays a string no
      // caller can change), rewritten by the next replay.
      view: (input: AcquireInput) => acquire(input, replayBytes, true),
      // For the engine's `execute` under its JSON serializer, which parses a replayed value
      // straight from the held string (an outcome held as bytes is answered as a copy).
      latin1: (input: AcquireInput) => acquire(input, LATIN1, true),
    }),
    complete: answersSynchronously(
      (input: CompleteInput): OwnerWriteResult => {
        checkWrite('complete', input);
        const outcome = checkOutcome(input.outcome, maxOutcomeBytes);
        const now = readClock(clock);
        const slot = table.live(input.key, now);
        const found = slot?.record;
        if (!slot || !found || found.owner !== input.owner) return NOT_OWNER;
        if (found.status === 'completed') {
          // A redelivered complete succeeds only with the very bytes that were recorded.
          return holds(found.outcome, outcome) ? OWNED : NOT_OWNER;
        }
        if (found.status !== 'in_progress') return NOT_OWNER;
        // Room first (the outcome's length is what it will cost), then the copy kept.
        const extra = costOf(slot.strings, 'completed', outcome) - slot.cost;
        if (extra > 0 && !table.makeRoom(now, 0, extra, slot)) {
          throw full(`an outcome of ${outcome.byteLength} bytes`);
        }
        const { leaseUntil } = slot;
        table.update(slot, 'completed', leaseUntil, now + input.retentionMs, hold(outcome));
        return OWNED;
      },
      // The outcome is copied into the held string (or array): the engine may pass a view
      // of a buffer it reuses.
      { copiesInput: true },
    ),
    release: answersSynchronously((input: ReleaseInput): OwnerWriteResult => {
      checkWrite('release', input);
      const now = readClock(clock);
      const slot = table.live(input.key, now);
      const found = slot?.record;
      if (!slot || !found || found.owner !== input.owner) return NOT_OWNER;
      if (found.status === 'released') return OWNED; // a redelivered release
      if (found.status !== 'in_progress') return NOT_OWNER;
      table.update(slot, 'released', now, now + input.retentionMs, found.outcome);
      return OWNED;
    }),
    extend: answersSynchronously((input: ExtendInput): OwnerWriteResult => {
      checkWrite('extend', input);
      checkDuration('leaseMs', input.leaseMs, ANY_FINITE);
      const now = readClock(clock);
      const slot = table.live(input.key, now);
      const found = slot?.record;
      if (!slot || found?.status !== 'in_progress' || found.owner !== input.owner) return NOT_OWNER;
      const leaseUntil = now + input.leaseMs;
      table.update(slot, 'in_progress', leaseUntil, leaseUntil + input.retentionMs, found.outcome);
      return { ok: true, leaseUntil };
    }),
    async get(key: string): Promise<StoredRecord | undefined> {
      if (typeof key !== 'string') throw new InvalidInputError('get needs a string key');
      const slot = table.live(key, readClock(clock));
      return slot ? clone(slot.record) : undefined;
    },
    async close(): Promise<void> {
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
    },
  };
}
