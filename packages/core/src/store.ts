/**
 * The store contract. An adapter implements these few atomic primitives; every policy
 * (key derivation, serialisation, clocks for heartbeats, retries, hooks) lives in core.
 *
 * Run `describeStoreConformance` from `@idem/store-conformance` against an adapter to check
 * every MUST below against the real service.
 */

/** Status of a stored record. `released` is a tombstone that only keeps the fence. */
export type RecordStatus = 'in_progress' | 'completed' | 'released';

/** What a store keeps per storage key. All deadlines are epoch milliseconds by the store's clock. */
export interface StoredRecord {
  status: RecordStatus;
  /** Fingerprint of the request that acquired the record. */
  fingerprint: string;
  /** Owner token of the latest acquisition. */
  owner: string;
  /** Fencing token of the latest acquisition (1 for the first). */
  fence: number;
  /**
   * Owner token of the acquisition that began the key's current logical request (see
   * {@link IdempotencyStore.acquire}); absent in a record written before stores kept it,
   * which then counts its `owner` as its origin.
   */
  origin?: string;
  /** Lease deadline; meaningful while `status` is `in_progress`. */
  leaseUntil: number;
  /**
   * Retention deadline: for `completed`, until when the outcome is replayed; for every
   * status, when the store may forget the record.
   */
  expiresAt: number;
  /** The encoded outcome (see `encodeOutcome`); present exactly when `status` is `completed`. */
  outcome?: Uint8Array;
}

/** Input of {@link IdempotencyStore.acquire}. */
export interface AcquireInput {
  /** Storage key (already derived from scope and client key; at most 64 characters). */
  key: string;
  /** Fingerprint of the request. Stored with a new acquisition; never compared by the store. */
  fingerprint: string;
  /** Fresh random owner token of this acquisition. */
  owner: string;
  /**
   * Lease length in ms. Every duration of this contract is a finite number >= 0, and a store
   * MUST accept 0: a deadline already due when written (`leaseMs` and `retentionMs` 0, a
   * `release` or `complete` with `retentionMs` 0) leaves the key free at once, its fence
   * still growing, and every later call working (the conformance suite's "due deadlines").
   */
  leaseMs: number;
  /**
   * How long the record (and so its fence) must outlive its lease, in ms. A record the
   * store acquires MUST NOT be forgotten before `leaseUntil + retentionMs`.
   */
  retentionMs: number;
}

/** Result of {@link IdempotencyStore.acquire}. */
export type AcquireResult =
  | {
      kind: 'acquired';
      /**
       * The new fence: previous fence + 1, or 1 when the key had no record. For a
       * redelivered acquire (the record is already the caller's own), the record's fence,
       * unchanged.
       */
      fence: number;
      /** The lease deadline now stored (`now + leaseMs`), epoch ms by the store's clock. */
      leaseUntil: number;
      /** True when a passed lease of another owner was taken over; `false` for a redelivery. */
      takeover: boolean;
      /**
       * Owner token of the acquisition that began this logical request: `input.owner` when
       * the key was free (no record, or the record's `expiresAt` passed); the record's
       * origin when a live record was taken over or a live `released` tombstone acquired;
       * the record's origin, unchanged, for a redelivery.
       */
      origin: string;
    }
  | {
      kind: 'found';
      /** The live record that prevented the acquisition (in progress with a live lease, or completed within retention). */
      record: StoredRecord;
      /** The store's clock when it decided, epoch ms (for a Retry-After hint). */
      now: number;
    };

/** Input of {@link IdempotencyStore.complete}. */
export interface CompleteInput {
  key: string;
  owner: string;
  /** The encoded outcome bytes. */
  outcome: Uint8Array;
  /** How long the outcome is replayed, in ms. */
  retentionMs: number;
}

/** Input of {@link IdempotencyStore.release}. */
export interface ReleaseInput {
  key: string;
  owner: string;
  /** How long the tombstone keeps the fence, in ms. */
  retentionMs: number;
}

/** Input of {@link IdempotencyStore.extend}. */
export interface ExtendInput {
  key: string;
  owner: string;
  /** New lease length from the store's now, in ms. */
  leaseMs: number;
  /** Retention after the new lease (as in {@link AcquireInput.retentionMs}). */
  retentionMs: number;
}

/** Result of an owner-checked write. `not_owner` means nothing was changed. */
export type OwnerWriteResult =
  | { ok: true; leaseUntil?: number }
  | { ok: false; reason: 'not_owner' };

/**
 * Whose clock decides expiry: `'server'`, the backing service's own (Redis `TIME`,
 * PostgreSQL `clock_timestamp()`); `'injectable'`, the `Clock` given to the adapter (the
 * memory store, DynamoDB). The same name is the conformance suite's `clock` option, and the
 * suite checks that a store declares the clock it is tested with.
 */
export type StoreClock = 'server' | 'injectable';

/** Static facts about a store that core takes into account. */
export interface StoreCapabilities {
  /** Largest encoded outcome the store accepts, in bytes; `undefined` = no limit. */
  maxOutcomeBytes?: number;
  /** Whose clock decides expiry (see {@link StoreClock}). */
  clock: StoreClock;
}

/** What {@link StoreAdmin.inspect} shows of a record: everything but the outcome bytes. */
export interface RecordInspection {
  status: RecordStatus;
  fingerprint: string;
  /** Owner token of the latest acquisition (or of the operator's forced release). */
  owner: string;
  fence: number;
  /** Lease deadline, epoch ms by the store's clock. */
  leaseUntil: number;
  /** Retention deadline, epoch ms by the store's clock. */
  expiresAt: number;
  /** Size of the stored outcome in bytes (as the store holds it, e.g. compressed); 0 when none. */
  outcomeBytes: number;
  /** The store's clock when it read the record, epoch ms (to tell how long a lease has left). */
  now: number;
}

/** Result of {@link StoreAdmin.forceRelease}. */
export type ForceReleaseResult =
  | {
      ok: true;
      /** The fence the record now holds: the stuck execution's fence + 1. */
      fence: number;
      /** Owner token of the execution that was cut off. */
      previousOwner: string;
    }
  | {
      ok: false;
      /**
       * `not_found`: no live record; `not_in_progress`: the record is `completed` or
       * `released`, and was left as it is (delete a completed record to forget its outcome).
       */
      reason: 'not_found' | 'not_in_progress';
    }
  | {
      ok: false;
      /**
       * Only with a {@link ForceReleaseExpectation}: the live record is `in_progress` but no
       * longer the execution expected (another acquisition took the key over since it was
       * inspected): it was left as it is.
       */
      reason: 'changed';
      /** Owner token of the in-progress record the store holds now. */
      owner: string;
      /** Its fence. */
      fence: number;
    };

/**
 * The execution an operator means to release, as `inspect` showed it: {@link
 * StoreAdmin.forceRelease} releases the record only while it is still that execution.
 */
export interface ForceReleaseExpectation {
  /** Owner token the in-progress record MUST still hold (`inspect`'s `owner`). */
  owner?: string;
  /** Fence the in-progress record MUST still hold (`inspect`'s `fence`). */
  fence?: number;
}

/**
 * The record an operator means to delete, as `inspect` showed it: {@link StoreAdmin.delete}
 * deletes the live record only while it still holds that status, owner and/or fence.
 */
export interface DeleteExpectation {
  /** Status the live record MUST still have (`inspect`'s `status`). */
  status?: RecordStatus;
  /** Owner token the live record MUST still hold (`inspect`'s `owner`). */
  owner?: string;
  /** Fence the live record MUST still hold (`inspect`'s `fence`). */
  fence?: number;
}

/** Result of {@link StoreAdmin.delete}. */
export type DeleteResult =
  | {
      /** Whether a live record was there: it is deleted now. */
      deleted: boolean;
      reason?: undefined;
    }
  | {
      deleted: false;
      /**
       * Only with a {@link DeleteExpectation}: the live record no longer holds the status,
       * owner or fence expected (it completed, or another acquisition took the key over since
       * it was inspected): it was left as it is.
       */
      reason: 'changed';
      /** Status of the live record the store holds now. */
      status: RecordStatus;
      /** Its owner token. */
      owner: string;
      /** Its fence. */
      fence: number;
    };

/**
 * Operator actions on one storage key, for tooling (`@idem/cli`) and runbooks; the state
 * machine never calls them. Each MUST be atomic with respect to every other call on the key,
 * in one round trip where the store allows, decided by the store's clock, and wrap failures
 * like the primitives do.
 */
export interface StoreAdmin {
  /** The record as stored, outcome size instead of bytes; `undefined` when none or expired. */
  inspect(key: string): Promise<RecordInspection | undefined>;
  /**
   * Frees a stuck `in_progress` record (lease live or passed): it MUST become a `released`
   * tombstone with `fence + 1`, a fresh owner token that no executor holds, `leaseUntil =
   * now`, and its `expiresAt` kept. The cut-off executor's `complete`, `extend` and `release`
   * then answer `not_owner`, and the next `acquire` takes the key with a higher fence still.
   * A `completed` or `released` record MUST be left unchanged (`not_in_progress`).
   *
   * With `expected` (recommended: the `owner` and `fence` that `inspect` showed), the store
   * MUST release the record only if the live `in_progress` record still holds that owner
   * and/or fence, decided in the same atomic step as the write; otherwise it MUST change
   * nothing and answer `changed` with the owner and fence it holds now. Without it, any
   * in-progress record is released: if the inspected lease passed and a retry took the key
   * over before the release landed, the healthy new execution would be cut off instead.
   * Throws `InvalidInputError` for an owner that is not a non-empty string or a fence that
   * is not a whole number from 0.
   */
  forceRelease(key: string, expected?: ForceReleaseExpectation): Promise<ForceReleaseResult>;
  /**
   * Removes the record whatever its status; answers whether a live record was there. The
   * key's fence MUST outlive it (a floor, a fence memory, or a tombstone that holds only the
   * fence and that reads and acquires treat as no record), at least as long as the deleted
   * record's own retention would have kept it: the next acquisition gets a fence above
   * every earlier one, so a fenced downstream never refuses it. An executor that still runs
   * then gets `not_owner` on its writes.
   *
   * With `expected` (recommended: the `status`, `owner` and `fence` that `inspect` showed),
   * the store MUST delete the live record only if it still holds that status, owner and/or
   * fence, decided in the same atomic step as the write; otherwise it MUST change nothing
   * and answer `changed` with the status, owner and fence it holds now. With no live record
   * it answers `{ deleted: false }`, as without. Without it, whatever the key holds is
   * deleted: if a retry took a released (or lease-passed) key over after it was inspected,
   * that live execution would be deleted and the next request would run beside it. Throws
   * `InvalidInputError` for a status that is not a record status, an owner that is not a
   * non-empty string or a fence that is not a whole number from 0.
   */
  delete(key: string, expected?: DeleteExpectation): Promise<DeleteResult>;
}

/**
 * What the engine tells a store about one call of it (the optional second argument of
 * `acquire`, `complete`, `release` and `extend`).
 */
export interface StoreCallContext {
  /**
   * Aborts (its reason the engine's `StoreUnavailableError`) once the engine stopped waiting
   * for this call: its `storeTimeoutMs` passed. A store MAY then cut the request (destroy
   * its connection or its HTTP request) so that a call nobody waits for does not hold a
   * connection, or queue the next calls behind it, until the service answers; what such a
   * call applied stays unknown to the engine either way, as for any timeout. Created when
   * first read: a store that never reads it costs nothing. Read first after the time limit
   * passed (the call waited for an admission slot), it is already aborted.
   */
  readonly signal: AbortSignal;
}

/**
 * A store of idempotency records.
 *
 * Every method MUST be atomic with respect to every other call on the same storage key,
 * from any process. Every method MUST decide expiry itself from its clock on every call
 * (never relying on the backing service's TTL deletion alone). Every failure of the backing
 * service MUST surface as a thrown `StoreUnavailableError` (or another `IdemError`) with the
 * original error as `cause`; an adapter MUST NOT swallow an error.
 *
 * Calls are redelivered in real life: a client library resends a command after a
 * reconnect, an SDK retries a request that timed out, and core itself repeats a final
 * write whose answer it did not get. The first delivery may have been applied. `acquire`,
 * `complete` and `release` therefore MUST recognise a repeat of a call they already applied
 * (same `owner`) and answer it as the caller's own, as each method states below.
 *
 * Bad input: stores are called directly too (by users, by contributed wrappers), not only
 * by core. `acquire`, `complete`, `release` and `extend` MUST refuse a storage key or an
 * owner token longer than the store's own limit with `InvalidInputError` (code
 * `INVALID_INPUT`) before anything is written; that limit MAY be as small as the service
 * needs but MUST NOT exceed 4096 UTF-16 code units (the conformance suite sends 4097 and
 * 2 MiB). A fractional duration (`leaseMs`, `retentionMs`) MUST be rounded up to a whole
 * ms, so every stored deadline is an integer and never shorter than asked.
 */
export interface IdempotencyStore {
  readonly capabilities: StoreCapabilities;

  /**
   * Atomically takes the record or returns the live record found, in one round trip where
   * the store allows.
   *
   * It MUST acquire (write `in_progress` with `owner`, `fingerprint`, fence = old fence + 1
   * or 1, `leaseUntil = now + leaseMs`) when there is no record, the record is `released`,
   * a `completed` record's `expiresAt` has passed, or an `in_progress` record's
   * `leaseUntil` has passed (a takeover). Otherwise it MUST change nothing and return the
   * record found. Of N concurrent acquires of a free key exactly one MUST win. The fence
   * MUST grow by at least one at every acquisition and never be reused while the record
   * lives. A store SHOULD keep it growing after a record expired too (the memory store keeps
   * a floor, the Redis store a small fence key, DynamoDB the item until TTL deletion): the
   * conformance suite checks one acquisition after retention passed.
   *
   * Redelivery: when the record found is `in_progress` and its `owner` equals
   * `input.owner` (its lease live or passed, nobody took it over), the acquisition is the
   * caller's own. It MUST answer `{ kind: 'acquired', fence: <the record's fence,
   * unchanged>, takeover: false, leaseUntil: now + leaseMs }` and renew the lease
   * (`leaseUntil = now + leaseMs`, `expiresAt >= leaseUntil + retentionMs`), with no fence
   * increment and no other change. It MUST NOT answer `found` for the caller's own record.
   *
   * Origin: every record MUST keep the owner token of the acquisition that began its logical
   * request, and every `acquired` answer MUST carry it (`origin`). An acquisition of a free
   * key (no record, or one whose `expiresAt` passed, whatever its status) begins a new one:
   * origin = `input.owner`. A takeover of an `in_progress` record whose lease passed, and an
   * acquisition of a `released` tombstone, both within the record's `expiresAt`, continue
   * the record's: its origin, carried over (a record without one: its `owner`). A
   * redelivery answers the record's origin. `forceRelease` keeps it; `delete` forgets it.
   * Core derives `originId` from it: the same for every execution of one logical request
   * (a retry after a failure, a takeover after a crash), new once the key is used again
   * after its retention, so that what the request writes elsewhere can be named by it.
   */
  acquire(input: AcquireInput, call?: StoreCallContext): Promise<AcquireResult>;

  /**
   * Stores the outcome and marks the record `completed` with `expiresAt = now + retentionMs`,
   * only if the record is `in_progress` and owned by `owner` (even if its lease has passed,
   * as long as nobody took it over). Otherwise it MUST change nothing and return
   * `not_owner`. A store with a size limit MUST throw `OutcomeTooLargeError` before writing
   * anything when the outcome does not fit.
   *
   * Redelivery: when the record found is `completed`, its `owner` equals `input.owner` and
   * its outcome bytes equal `input.outcome` byte for byte, the call is a repeat of the
   * caller's own completion: it MUST answer `{ ok: true }` and change nothing (not the
   * outcome, not `expiresAt`). With different bytes it MUST answer `not_owner` and change
   * nothing.
   */
  complete(input: CompleteInput, call?: StoreCallContext): Promise<OwnerWriteResult>;

  /**
   * Gives the key up so a retry executes again: the record becomes a `released` tombstone
   * that keeps the fence (or is removed only if the fence is kept some other way), only if
   * it is `in_progress` and owned by `owner`. Otherwise it MUST change nothing and return
   * `not_owner`.
   *
   * Redelivery: when the record found is a `released` tombstone whose `owner` equals
   * `input.owner`, it SHOULD answer `{ ok: true }` and change nothing (the conformance suite
   * does not check this; core treats either answer as final).
   */
  release(input: ReleaseInput, call?: StoreCallContext): Promise<OwnerWriteResult>;

  /**
   * Renews the lease to `now + leaseMs`, only if the record is `in_progress` and owned by
   * `owner`. Otherwise it MUST change nothing and return `not_owner`. A store MAY keep a
   * lease that ends later than `now + leaseMs` (never move a lease back: a renewal that
   * arrives after a later one of the same owner, or from a clock behind the one that wrote
   * it), here and in a redelivered `acquire`, and then SHOULD answer the lease it keeps
   * (`leaseUntil`); the DynamoDB store does. A lease that has passed is never kept.
   */
  extend(input: ExtendInput, call?: StoreCallContext): Promise<OwnerWriteResult>;

  /**
   * Reads the record as stored (any status), or `undefined` when there is none or it has
   * expired. For inspection and tests; the state machine does not need it.
   */
  get(key: string): Promise<StoredRecord | undefined>;

  /**
   * Operator actions (inspect, force-release, delete). Optional in the type, so that wrappers
   * and test doubles of the engine need not carry it; every published adapter MUST provide
   * it, and the conformance suite fails a store without it.
   */
  readonly admin?: StoreAdmin;

  /** Frees resources the adapter owns (timers). Never closes the user's client. */
  close?(): Promise<void>;
}
