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
  | { type: 'store_error'; storageKey: string; operation: StoreOperation; error: unknown };

/** The store call an event or error refers to. */
export type StoreOperation = 'acquire' | 'complete' | 'release' | 'extend' | 'get';

/** Receives events. Errors it throws are ignored so a logging bug cannot break a request. */
export type IdemEventListener = (event: IdemEvent) => void;
