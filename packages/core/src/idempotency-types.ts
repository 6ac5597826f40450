import type { Execution } from './execution.js';
import type { Scope } from './keys.js';
import type { StoredOutcome } from './outcome-codec.js';
import type { ResolvedSettings } from './settings.js';

/** Identifies one logical request. */
export interface IdempotentRequest {
  /** The client's idempotency key (1..255 printable ASCII). */
  key: string;
  /** What the key is unique within (tenant, principal, operation). @default null */
  scope?: Scope;
  /**
   * Fingerprint of the request (see `fingerprint()`); a retry with another one gets `MISMATCH`.
   * A string (anything else is `INVALID_INPUT`, before anything is acquired). @default ''
   */
  fingerprint?: string;
  /**
   * The operation the scope names (e.g. `POST /charges`), reported in events, spans and
   * metrics. Only a label: the storage key derives from `scope` and `key` alone, so put the
   * operation in the scope too. Keep it low-cardinality (a route, not a path). @default undefined
   */
  operation?: string;
}

/** What the operation receives. */
export interface OperationContext {
  /** Fencing token; pass it to downstream writes that can reject a lower one. */
  fence: number;
  /** Aborts when the lease is lost. */
  signal: AbortSignal;
  /** The derived storage key (stable for a scope and key). */
  storageKey: string;
  /**
   * The logical request's id (32 hex characters): the same for every execution of it (a
   * retry after a failure, a takeover after a crash), a new one when the key is used again
   * after its record's retention passed. Name what the operation creates elsewhere by it
   * (not by the storage key, which outlives the request), and fence its writes with `fence`.
   */
  originId: string;
}

/** Result of `begin`: either the stored outcome to replay, or an execution to run. */
export type BeginResult =
  | {
      kind: 'replay';
      outcome: StoredOutcome;
      storageKey: string;
      /** Fence of the execution whose outcome this is (its stream generation). */
      fence: number;
    }
  | { kind: 'acquired'; execution: Execution };

/** Result of `execute`. */
export interface ExecuteResult<T> {
  value: T;
  /** True when the value is a replay of a recorded outcome. */
  replayed: boolean;
}

/** The replay state machine bound to a store and options. */
export interface Idempotency<T = unknown> {
  /**
   * Runs `operation` at most once per live lease for the request's key and records its
   * final outcome; replays that outcome to every later call with the same key and
   * fingerprint.
   *
   * @throws InvalidKeyError, MismatchError, InProgressError, LeaseLostError,
   *   StoreUnavailableError, OutcomeTooLargeError, OutcomeNotRecordedError, StoreFullError,
   *   ReplayedFailureError, or the operation's own error when it was not final.
   */
  execute(
    request: IdempotentRequest,
    operation: (ctx: OperationContext) => Promise<T>,
  ): Promise<ExecuteResult<T>>;
  /**
   * The lower-level step: acquire (or wait, or replay). For callers that must start
   * answering before the operation ends (streamed HTTP responses): run, then call
   * `execution.complete(outcome)` or `execution.release()`.
   *
   * @throws OutcomeNotRecordedError when the key holds a not-recorded marker (the
   *   operation ran once, its outcome could not be recorded).
   */
  begin(request: IdempotentRequest, options?: BeginOptions): Promise<BeginResult>;
  /**
   * Waits until no final write is being retried in the background (for a server's
   * shutdown), nor a give-back (the release of a key whose acquire failed, see the README),
   * or `timeoutMs` passed. Resolves with how many are still pending. With
   * `{ finalWritesOnly: true }` only the final writes are waited for (and counted): a
   * give-back cut short leaves its key to its lease, never a second run.
   * @param timeoutMs longest wait; MUST be a finite, non-negative number of ms (else the
   *   promise rejects with `InvalidInputError`) @default leaseMs
   */
  drain(timeoutMs?: number, options?: DrainOptions): Promise<number>;
  /** The options in force, defaults filled in. */
  readonly settings: ResolvedSettings;
}

/** Options of `drain`. */
export interface DrainOptions {
  /**
   * Wait only for the final writes retried in the background (outcomes that would be lost,
   * and the operation run again, if the process exited before they landed), not for the
   * give-backs of acquisitions whose operation never ran: during a store outage those last
   * up to about two leases, and one cut short only leaves its key to its lease (a retry
   * waits, as after a crash; it never runs twice). @default false
   */
  finalWritesOnly?: boolean;
}

/** Options of one `begin` call. */
export interface BeginOptions {
  /** Stops a bounded wait at once (the client went away); `begin` then rejects with the signal's reason. */
  signal?: AbortSignal;
}
