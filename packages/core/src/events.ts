import type { NotRecordedReason } from './errors.js';

/**
 * What every event says about the request it concerns. `storageKey` is the SHA-256 of the
 * scope and the client's key (64 hex, see `deriveStorageKey`): the raw key never appears in
 * an event. `operation` is the request's `operation` (the scope's operation, e.g.
 * `POST /charges`), `undefined` when the caller gave none.
 */
interface EventBase {
  storageKey: string;
  operation: string | undefined;
}

/** How an execution (one acquisition) ended, as reported once by `execution_end`. */
export type ExecutionEndResult = 'completed' | 'released' | 'lease_lost' | 'abandoned';

/**
 * What the state machine reports through `onEvent`, for logs, metrics and traces.
 * `durationMs` is always the duration of the step the event reports, in ms (fractional).
 * Events are built only when a listener is given: without one they cost nothing.
 */
export type IdemEvent =
  /** An acquire took the key (`takeover`: from an owner whose lease passed); `durationMs`: the acquire call. */
  | (EventBase & { type: 'miss'; fence: number; takeover: boolean; durationMs: number })
  /**
   * An acquire found a completed record: its outcome is replayed. `durationMs`: the acquire
   * call; `decodeMs`: from the store's answer to the event, opening and decoding the stored
   * outcome (for `execute`, the value too: the serializer's decode or the JSON parse), so the
   * acquire ended `decodeMs` before the event; `outcomeBytes`: as stored. A record whose
   * outcome was not recorded (a marker: the caller gets `OUTCOME_NOT_RECORDED`) is a `hit` too.
   */
  | (EventBase & {
      type: 'hit';
      fence: number;
      outcomeBytes: number;
      durationMs: number;
      decodeMs: number;
    })
  /** An acquire found a live lease of another owner (`IN_PROGRESS`, or one poll of a wait). */
  | (EventBase & { type: 'conflict'; fence: number; retryAfterMs: number; durationMs: number })
  /** An acquire found a live record of another request (`MISMATCH`). */
  | (EventBase & { type: 'mismatch'; durationMs: number })
  /** The final write landed: `durationMs` from its first attempt (retries included); `outcomeBytes` as stored. */
  | (EventBase & { type: 'completed'; fence: number; outcomeBytes: number; durationMs: number })
  /** The key was released for a retry (`durationMs`: the release call). */
  | (EventBase & { type: 'released'; fence: number; durationMs: number })
  /**
   * Another execution took the key over, or (phase `heartbeat`, `max_hold`) the lease passed
   * without a renewal: renewals kept failing, the execution was abandoned, or `maxHoldMs`
   * passed; a final write may still land after it if nobody took the key over. Phase
   * `start`: the acquisition was refused before the operation started, too late in its
   * lease (a `miss` listener held the event loop up). Once per acquisition. `durationMs`:
   * since this one acquired it.
   */
  | (EventBase & {
      type: 'lease_lost';
      fence: number;
      phase: 'heartbeat' | 'complete' | 'release' | 'max_hold' | 'start';
      durationMs: number;
    })
  /**
   * A store call failed or timed out (`method`); `durationMs`: that call. `fence`: the
   * acquisition's, for calls an execution makes (undefined for `acquire`).
   */
  | (EventBase & {
      type: 'store_error';
      method: StoreOperation;
      fence: number | undefined;
      error: unknown;
      durationMs: number;
    })
  /**
   * One store call core made, with its time (a timed-out call counts its time limit), for
   * latency by method. `ok` is false when it failed or timed out.
   */
  | (EventBase & { type: 'store_call'; method: StoreOperation; ok: boolean; durationMs: number })
  /**
   * A completed record's outcome could not be opened or decoded (tampered, truncated,
   * encrypted with a key not in the keyring): the caller gets `OUTCOME_CORRUPT`, never a
   * replay. `durationMs`: the acquire call; `decodeMs`: from the store's answer to the
   * event, the opening that failed (an `outcomeCodec`'s call included).
   */
  | (EventBase & {
      type: 'outcome_corrupt';
      fence: number;
      error: unknown;
      durationMs: number;
      decodeMs: number;
    })
  /**
   * The operation ran but its outcome was not recorded (`reason`); a final marker is written
   * instead so a retry does not run it again (`size` of the outcome when known).
   */
  | (EventBase & {
      type: 'outcome_not_recorded';
      fence: number;
      reason: NotRecordedReason;
      size?: number;
      limit?: number;
    })
  /**
   * The executor stopped retrying a final write that kept failing: `maxHoldMs` since the
   * acquisition passed (`max_hold`), or the store answered an error that retrying cannot
   * fix (`error`). The record stays in progress until its lease passes; a retry may then
   * run the operation again. `durationMs`: since the acquisition.
   */
  | (EventBase & {
      type: 'completion_abandoned';
      fence: number;
      reason: 'max_hold' | 'error';
      error: unknown;
      durationMs: number;
    })
  /**
   * Exactly once per acquisition (`miss`), when this process stops holding the key:
   * completed, released, lost to another owner, or abandoned (a failed release or final
   * write; the lease then runs out by itself). `durationMs`: since the acquisition. A
   * count of `miss` minus `execution_end` is the leases held right now.
   */
  | (EventBase & {
      type: 'execution_end';
      fence: number;
      result: ExecutionEndResult;
      durationMs: number;
    });

/** The store call an event or error refers to. */
export type StoreOperation = 'acquire' | 'complete' | 'release' | 'extend' | 'get';

/**
 * Receives events. Errors it throws (or, for an async listener, rejections) are ignored so a
 * logging bug cannot break a request.
 */
export type IdemEventListener = (event: IdemEvent) => void;

/**
 * The `emit` of resolved settings, and whether anybody listens: emitting sites check
 * `observed` first, so that without a listener no event object is built and no time read.
 * @internal
 */
export interface EventSink {
  /** True when an `onEvent` listener was given. */
  readonly observed: boolean;
  readonly emit: IdemEventListener;
}
