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
  type Latin1CompleteInput,
  NOT_OWNER,
  OutcomeTooLargeError,
  OWNED,
  type OwnerWriteResult,
  type ReleaseInput,
  readClock,
  type StoreAdmin,
  type StoreCapabilities,
  type StoredRecord,
  StoreFullError,
} from '@idem/core';
import { storeClock } from './clock.js';
import { type HeldOutcome, hold, holds, release, type ViewBuffer, viewOf } from './held-outcome.js';
import { checkString, copied, sweepInterval } from './input.js';
import { isAscii } from './latin1.js';
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
// Each is rounded up to a whole ms where a deadline is computed, as every store does
// (store contract, "Bad input"): deadlines stay integers, never shorter than asked.
const ANY_FINITE = Number.MAX_VALUE;

/** Default of {@link MemoryStoreOptions.maxBytes}: 128 MiB. */
export const DEFAULT_MAX_BYTES = 128 * MiB;
/** Default of {@link MemoryStoreOptions.maxOutcomeBytes}: 8 MiB. */
export const DEFAULT_MAX_OUTCOME_BYTES = 8 * MiB;
/** Default of {@link MemoryStoreOptions.maxEntries}. */
export const DEFAULT_MAX_ENTRIES = 100_000;

/** The acquire forms only the engine may call (they keep its key and owner uncopied). */
interface EngineForms {
  readonly view: (input: AcquireInput) => AcquireResult;
  readonly latin1: (input: AcquireInput) => AcquireResult;
}

/** {@link EngineForms} by store, for this package's tests only (not exported from the package). */
const engineForms = new WeakMap<object, EngineForms>();
// Read at load: a caller that later replaces `WeakMap.prototype.set` is not handed the map.
const setEngineForms = Function.prototype.call.bind(WeakMap.prototype.set) as (
  map: WeakMap<object, EngineForms>,
  store: object,
  forms: EngineForms,
) => unknown;

/**
 * The engine-only acquire forms of `store`, as core holds them (out of every caller's reach).
 * @internal for this package's tests: `src/index.ts` does not export it.
 */
export function engineFormsOf(store: MemoryStore): EngineForms | undefined {
  return engineForms.get(store);
}

/** Options of {@link createMemoryStore}. */
export interface MemoryStoreOptions {
  /**
   * Clock that decides expiry (leases and retention). With the default, `systemClock` (given
   * or not), the store counts on a monotonic clock (`performance.timeOrigin +
   * performance.now()`): a stepped wall clock neither hands a live lease to a competitor nor
   * cuts a retention short, and the store agrees with the engine's lease keeper in the same
   * process, which counts elapsed time too. Any other clock is used as given (a `ManualClock`
   * in tests). A call made while it answers anything but a finite number MUST fail with
   * `InvalidInputError` and change nothing. @default systemClock
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
   * records whose lease has passed. A tombstone or passed lease evicted within its
   * retention leaves a remnant until then (its key and origin, about 300 bytes, no entry):
   * the retry or takeover that acquires the key next carries its logical request on (the
   * same `originId`, and a takeover when it was in progress), as without the eviction. It
   * MUST NOT drop a completed record within its retention, a live lease or a remnant before
   * its expiry (unless `forgetOriginsWhenFull`): when only those remain, `acquire` and
   * `complete` throw `StoreFullError` and change nothing. A `complete` with an outcome of at most 1 KiB
   * never fails for room. An `acquire` also keeps room for one typical outcome of each
   * record in progress (a moving average of recent outcome sizes): a new key is refused
   * before it runs rather than its outcome after.
   * @default 134_217_728 (128 MiB)
   */
  maxBytes?: number;
  /**
   * When only completed records within retention, live leases and remnants are left and a
   * record or outcome needs bytes, evict the remnants that expire first instead of
   * answering `StoreFullError`: the retry of such a request then begins a new logical request
   * (another `originId`, not a takeover). For a store that must keep taking new keys
   * through a flood of failing requests, at the price of the origin of the oldest failed
   * ones. See `maxBytes`. @default false
   */
  forgetOriginsWhenFull?: boolean;
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
  /**
   * Bytes accounted to the records and remnants held (see `maxBytes`); never more than
   * `maxBytes`.
   */
  readonly bytes: number;
  /**
   * The part of `bytes` held by remnants: what a released or passed-lease record evicted
   * within its retention leaves (its key and origin, no entry) until its retention ends.
   */
  readonly remnantBytes: number;
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
    origin: record.origin,
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

/** Store time without an admission or a completion after which one key is let in regardless of the room kept. */
const HEADROOM_PROBE_MS = 10_000;

/**
 * What an acquire keeps free for the outcomes of the records in progress. Each in-progress
 * record holds a reserve for the small final marker only ({@link MARKER_OUTCOME_BYTES}), so
 * without this a store near its budget took new keys whose outcomes then did not fit: the
 * operation ran, and its outcome was lost (`STORE_FULL` at `complete`, a not-recorded marker,
 * 500 for every retry). With it, a new key is refused (`StoreFullError` at `acquire`, before
 * anything runs; HTTP 503 with `Retry-After`) unless the room left holds, beside the new
 * record, one typical outcome for each record in progress and the new one. Typical: a moving
 * average (weight 1/16) of what the outcomes given to `complete` needed beyond the reserve,
 * refused ones included, so small outcomes cost no headroom. An average, not a bound: an
 * outcome far larger than the recent ones may still not fit at `complete`.
 *
 * The average moves only with completions, and a store that refuses every new key for the
 * room it keeps sees none: a run of outcomes too large to store would lock new keys out for a
 * whole retention. So after {@link HEADROOM_PROBE_MS} of store time without an admission or a
 * completion, one key is let in if its record fits (a probe): its outcome moves the average.
 */
class OutcomeHeadroom {
  private average = 0;
  private seen = false;
  /** Store time of the last admission or completion. */
  private active = Number.NEGATIVE_INFINITY;

  /** An outcome of `length` bytes was given to `complete` at store time `now`. */
  saw(length: number, now: number): void {
    this.active = now;
    const need = Math.max(0, length - MARKER_OUTCOME_BYTES);
    if (!this.seen) {
      this.seen = true;
      this.average = need;
    } else this.average += (need - this.average) / 16;
  }

  /** A new record was taken at store time `now`. */
  admitted(now: number): void {
    this.active = now;
  }

  /**
   * Bytes a new record keeps free beside itself at store time `now` when `others` records are
   * in progress (passed leases included: the caller reads this again as eviction takes them),
   * at most `limit` (what an empty store has beside the record; never negative, so a record
   * that cannot fit even in an empty store is still refused). None for a probe.
   */
  spare(others: number, limit: number, now: number): number {
    // A clock that stepped back leaves `active` ahead of it: a probe then too.
    if (now < this.active || now - this.active >= HEADROOM_PROBE_MS) return 0;
    return Math.max(0, Math.min(Math.ceil(this.average) * (others + 1), limit));
  }
}

/**
 * Smallest `maxBytes` accepted: one in-progress record with 1 KiB of strings. (A record with
 * longer ones may not fit a store this small: its acquire answers `StoreFullError`.)
 */
const MIN_MAX_BYTES = RECORD_OVERHEAD_BYTES + OUTCOME_OVERHEAD_BYTES + MARKER_OUTCOME_BYTES + 1024;

/**
 * The sweep timer of a store: it holds the table only weakly (and is made outside
 * `createMemoryStore`, whose closures would otherwise keep the table alive through their
 * shared scope), so a store dropped without `close()` is collected with its records, and
 * its timer then stops itself.
 */
function startSweep(
  table: { deref(): RecordTable | undefined },
  clock: Clock,
  interval: number,
): ReturnType<typeof setInterval> {
  const timer = setInterval(() => {
    const held = table.deref();
    if (held === undefined) {
      clearInterval(timer);
      return;
    }
    const now = clock.now();
    if (Number.isFinite(now)) held.sweep(now); // a bad reading waits for the next tick
  }, interval);
  timer.unref?.();
  return timer;
}

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
  // `{}` stands in for undefined only: null (or a number) is refused, not read as defaults.
  checkObject('createMemoryStore', options);
  const clock = storeClock(options.clock === undefined ? undefined : checkClock(options.clock));
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
  const forgetOrigins = options.forgetOriginsWhenFull ?? false;
  if (typeof forgetOrigins !== 'boolean') {
    throw new InvalidInputError('forgetOriginsWhenFull must be a boolean');
  }
  const table = new RecordTable(maxEntries, maxBytes, forgetOrigins);
  const headroom = new OutcomeHeadroom();
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
    // A runtime without WeakRef holds the table (the timer is unref'd; close() stops it).
    const held = typeof WeakRef === 'function' ? new WeakRef(table) : { deref: () => table };
    timer = startSweep(held, clock, interval);
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
    const leaseUntil = now + Math.ceil(input.leaseMs);
    if (found) {
      const record = found.record;
      if (record.status === 'in_progress' && record.owner === input.owner) {
        // A redelivered acquire: the caller's own acquisition, renewed, fence unchanged.
        const expiresAt = Math.max(record.expiresAt, leaseUntil + Math.ceil(input.retentionMs));
        table.update(found, 'in_progress', leaseUntil, expiresAt, record.outcome);
        const origin = found.origin;
        return { kind: 'acquired', fence: record.fence, leaseUntil, takeover: false, origin };
      }
      const isLive =
        (record.status === 'in_progress' && now < record.leaseUntil) ||
        record.status === 'completed';
      if (isLive) return { kind: 'found', record: clone(record, bytes), now };
    }
    // No record, a tombstone or a passed lease: the new record takes its place.
    const owner = engine ? input.owner : copied(input.owner);
    // What a tombstone or passed lease evicted within its retention left (see Remnant).
    const remnant = found ? undefined : table.remnant(input.key, now);
    // The owner of an evicted passed lease acquiring again: its own acquisition redelivered,
    // answered as the record would have (same fence, not a takeover). Nobody acquired the key
    // since (the remnant is still there), so that fence is still the key's highest.
    const redelivered = remnant?.owner !== undefined && remnant.owner === input.owner;
    const fence =
      remnant !== undefined && redelivered
        ? remnant.fence
        : (found ? found.record.fence : table.fenceFloor) + 1;
    // A live record (a passed lease, a tombstone, or the remnant of one) continues its
    // logical request; a free key (none, or expired: `live` answers none) begins one.
    const origin = found ? found.origin : remnant ? remnant.origin : owner;
    const record: HeldRecord = {
      status: 'in_progress',
      fingerprint: copied(input.fingerprint),
      owner,
      origin,
      fence,
      leaseUntil,
      expiresAt: leaseUntil + Math.ceil(input.retentionMs),
    };
    const slot = newSlot(engine ? input.key : copied(input.key), record);
    // Room for the record, and beside it for a typical outcome of each record in progress,
    // this one included (see OutcomeHeadroom). Made around the record replaced: refused, it
    // stays (its owner may complete).
    const replaced = found?.status === 'in_progress' ? 1 : 0;
    // The remnant goes when the record is inserted (in bytes only: it holds no entry).
    const base = slot.cost - (found ? found.cost : remnant ? remnant.cost : 0);
    const needed = () =>
      base + headroom.spare(table.inProgress - replaced, maxBytes - slot.cost, now);
    // The remnant is kept through the eviction (never forgotten for room): `base` counts it freed.
    const room = found
      ? table.makeRoom(now, 0, needed, found)
      : table.makeRoom(now, 1, needed, undefined, remnant);
    if (!room) throw full('a new record');
    if (found) table.remove(found);
    table.insert(slot);
    headroom.admitted(now);
    return {
      kind: 'acquired',
      fence,
      leaseUntil,
      takeover: found
        ? found.record.status === 'in_progress'
        : remnant?.takeover === true && !redelivered,
      origin,
    };
  };

  /**
   * `complete` of a checked `outcome`: bytes (copied into the held string), or with `given`
   * a string of one character a byte the engine made, held as it is.
   */
  const complete = (
    input: CompleteInput | Latin1CompleteInput,
    outcome: Uint8Array | string,
    given: boolean,
  ): OwnerWriteResult => {
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
    headroom.saw(outcome.length, now);
    const extra = costOf(slot.strings, 'completed', outcome) - slot.cost;
    if (extra > 0 && !table.makeRoom(now, 0, extra, slot)) {
      throw full(`an outcome of ${outcome.length} bytes`);
    }
    const held = given ? (outcome as string) : hold(outcome as Uint8Array);
    table.update(slot, 'completed', slot.leaseUntil, now + Math.ceil(input.retentionMs), held);
    return OWNED;
  };

  // For the engine, which decodes a replayed outcome before anything else runs: the bytes are
  // a view of this store's reused buffer (the held outcome stays a string no caller can
  // change), rewritten by the next replay.
  const view = (input: AcquireInput) => acquire(input, replayBytes, true);
  // For the engine's `execute` under its JSON serializer, which parses a replayed value
  // straight from the held string (an outcome held as bytes is answered as a copy).
  const latin1 = (input: AcquireInput) => acquire(input, LATIN1, true);
  const store: MemoryStore = {
    capabilities,
    admin: createMemoryAdmin(table, clock),
    get size() {
      return table.size;
    },
    get bytes() {
      return table.bytes;
    },
    get remnantBytes() {
      return table.remnantBytesHeld;
    },
    sweep,
    // `view` and `latin1` are held by core, where only its engine reads them.
    acquire: answersSynchronously((input: AcquireInput) => acquire(input, release, false), {
      view,
      latin1,
    }),
    complete: answersSynchronously(
      (input: CompleteInput): OwnerWriteResult => {
        checkWrite('complete', input);
        return complete(input, checkOutcome(input.outcome, maxOutcomeBytes), false);
      },
      {
        // The outcome is copied into the held string (or array): the engine may pass a view
        // of a buffer it reuses.
        copiesInput: true,
        // For the engine: the outcome as a string of one character a byte that it made (an
        // ASCII JSON value's encoding, no caller holds it), kept as it is.
        latin1Outcome: (input: Latin1CompleteInput): OwnerWriteResult => {
          checkWrite('complete', input);
          const held = input.outcomeLatin1;
          if (typeof held !== 'string') throw new InvalidInputError('An outcome must be a string');
          // The engine gives only the encoding of an ASCII JSON value; anything else (a
          // character above 0xFF would be kept and read back cut) is refused.
          if (!isAscii(held))
            throw new InvalidInputError('A Latin-1 outcome must be ASCII (the engine makes it)');
          if (held.length > maxOutcomeBytes)
            throw new OutcomeTooLargeError(held.length, maxOutcomeBytes);
          return complete(input, held, true);
        },
      },
    ),
    release: answersSynchronously((input: ReleaseInput): OwnerWriteResult => {
      checkWrite('release', input);
      const now = readClock(clock);
      const slot = table.live(input.key, now);
      const found = slot?.record;
      if (!slot || !found || found.owner !== input.owner) return NOT_OWNER;
      if (found.status === 'released') return OWNED; // a redelivered release
      if (found.status !== 'in_progress') return NOT_OWNER;
      table.update(slot, 'released', now, now + Math.ceil(input.retentionMs), found.outcome);
      return OWNED;
    }),
    extend: answersSynchronously((input: ExtendInput): OwnerWriteResult => {
      checkWrite('extend', input);
      checkDuration('leaseMs', input.leaseMs, ANY_FINITE);
      const now = readClock(clock);
      const slot = table.live(input.key, now);
      const found = slot?.record;
      if (!slot || found?.status !== 'in_progress' || found.owner !== input.owner) return NOT_OWNER;
      const leaseUntil = now + Math.ceil(input.leaseMs);
      table.update(
        slot,
        'in_progress',
        leaseUntil,
        leaseUntil + Math.ceil(input.retentionMs),
        found.outcome,
      );
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
  setEngineForms(engineForms, store, { view, latin1 });
  return store;
}
