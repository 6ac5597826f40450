import { IdemError, StoreFullError, StoreUnavailableError } from '../errors.js';

/** How an adapter's service errors become idem's typed errors (see {@link toStoreError}). */
export interface StoreErrorRules {
  /** Name of the service in messages, e.g. `'Redis'`. */
  service: string;
  /**
   * True when the service refused the call for lack of room (Redis `OOM`, PostgreSQL 53100):
   * the error becomes `StoreFullError`. Asked for every operation; answer for `acquire` only
   * if a full store still records the writes of executions already running.
   */
  isFull?(error: unknown, operation: string): boolean;
  /** True when the call was refused before it was sent (nothing to give back): `unsent`. */
  isUnsent?(error: unknown): boolean;
  /** Text of the service's error for the message. @default its `message` */
  describe?(error: unknown): string;
  /** Text appended to the message, e.g. how to create a missing table. @default '' */
  hint?(error: unknown): string;
}

/** The message of any thrown value. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The typed error a failed service call becomes: an `IdemError` passes through as it is;
 * otherwise `StoreFullError` when `rules.isFull` says so, else `StoreUnavailableError`
 * (`unsent` when `rules.isUnsent` says so), each with the service's error as `cause`.
 */
export function toStoreError(rules: StoreErrorRules, operation: string, error: unknown): IdemError {
  if (error instanceof IdemError) return error;
  const text = `${(rules.describe ?? errorMessage)(error)}${rules.hint?.(error) ?? ''}`;
  if (rules.isFull?.(error, operation)) {
    const full = new StoreFullError(`${rules.service} is full: ${text}`);
    full.cause = error;
    return full;
  }
  return new StoreUnavailableError(`${rules.service} ${operation} failed: ${text}`, {
    cause: error,
    unsent: rules.isUnsent?.(error) === true,
  });
}

/**
 * Runs one service call; a synchronous throw or a rejection becomes {@link toStoreError}'s
 * typed error. With `timeoutMs`, the call also fails with `StoreUnavailableError` once that
 * many ms passed (a late answer then settles nothing and is never unhandled): for a client
 * library that does not bound its own calls. `unref`: the timer does not hold the process.
 */
export function guardStoreCall<T>(
  rules: StoreErrorRules,
  operation: string,
  run: () => Promise<T>,
  timing: {
    timeoutMs?: number;
    unref?: boolean;
    /** Told the timeout's error when `timeoutMs` passed first (to cut the call itself). */
    onTimeout?: (error: Error) => void;
  } = {},
): Promise<T> {
  let sent: Promise<T>;
  try {
    sent = Promise.resolve(run());
  } catch (error) {
    return Promise.reject(toStoreError(rules, operation, error));
  }
  const { timeoutMs } = timing;
  const mapError = (error: unknown) => toStoreError(rules, operation, error);
  if (timeoutMs === undefined || !(timeoutMs > 0 && Number.isFinite(timeoutMs))) {
    return sent.then(undefined, (error: unknown) => {
      throw mapError(error);
    });
  }
  return settleWithin(sent, timeoutMs, {
    onTimeout: () => {
      const error = new StoreUnavailableError(
        `${rules.service} ${operation} timed out after ${timeoutMs} ms`,
      );
      try {
        timing.onTimeout?.(error);
      } catch {
        // A hook's bug must not change the call's answer.
      }
      return error;
    },
    mapError,
    unref: timing.unref,
  });
}

/**
 * `call`, or the error of `onTimeout` once `timeoutMs` passed, whichever comes first; a
 * rejection goes through `mapError`. One timer and one promise, the timer cleared when the
 * call settles; `unref` keeps it from holding the process open.
 */
export function settleWithin<T>(
  call: Promise<T>,
  timeoutMs: number,
  how: {
    onTimeout: () => Error;
    mapError?: (error: unknown) => unknown;
    unref?: boolean | undefined;
  },
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(how.onTimeout()), timeoutMs);
    if (how.unref) timer.unref?.();
    // A late answer of a call that timed out settles nothing (and is never unhandled).
    call.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(how.mapError ? how.mapError(error) : error);
      },
    );
  });
}
