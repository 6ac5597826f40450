import type { NotRecordedReason } from './errors.js';

/** What the state machine reports through `onEvent`, for logs and metrics. */
export type IdemEvent =
  | { type: 'miss'; storageKey: string; fence: number; takeover: boolean }
  | { type: 'hit'; storageKey: string }
  | { type: 'conflict'; storageKey: string; retryAfterMs: number }
  | { type: 'mismatch'; storageKey: string }
  | { type: 'completed'; storageKey: string; fence: number }
  | { type: 'released'; storageKey: string; fence: number }
  | {
      type: 'lease_lost';
      storageKey: string;
      fence: number;
      phase: 'heartbeat' | 'complete' | 'release' | 'max_hold';
    }
  | { type: 'store_error'; storageKey: string; operation: StoreOperation; error: unknown }
  /**
   * The operation ran but its outcome was not recorded (`reason`); a final marker is written
   * instead so a retry does not run it again (`size` of the outcome when known).
   */
  | {
      type: 'outcome_not_recorded';
      storageKey: string;
      fence: number;
      reason: NotRecordedReason;
      size?: number;
      limit?: number;
    }
  /**
   * The executor stopped retrying a final write that kept failing: `maxHoldMs` since the
   * acquisition passed (`max_hold`), or the store answered an error that retrying cannot
   * fix (`error`). The record stays in progress until its lease passes; a retry may then
   * run the operation again.
   */
  | {
      type: 'completion_abandoned';
      storageKey: string;
      fence: number;
      reason: 'max_hold' | 'error';
      error: unknown;
    };

/** The store call an event or error refers to. */
export type StoreOperation = 'acquire' | 'complete' | 'release' | 'extend' | 'get';

/**
 * Receives events. Errors it throws (or, for an async listener, rejections) are ignored so a
 * logging bug cannot break a request.
 */
export type IdemEventListener = (event: IdemEvent) => void;
