/**
 * Time limits and the caller's signal, joined, so that no step of a call outlives either.
 */

/** setTimeout cannot wait past 2^31 - 1 ms; a limit that far away is no limit in practice. */
const MAX_TIMER_MS = 2_147_483_647;

/** A signal that aborts when the caller's signal does or when a time limit passes. */
export interface Bound {
  signal: AbortSignal;
  /** True once the time limit passed (rather than the caller aborting). */
  expired(): boolean;
  /** Stops the timer. The caller's abort still reaches `signal` afterwards. */
  dispose(): void;
}

function follow(caller: AbortSignal, own: AbortSignal): AbortSignal {
  // AbortSignal.any holds its sources weakly: a long-lived caller signal collects no listener
  // per call. Node 20.0-20.2 lack it; there a listener ties them, removed only when one aborts.
  if (typeof AbortSignal.any === 'function') return AbortSignal.any([caller, own]);
  const joined = new AbortController();
  const onCaller = () => joined.abort(caller.reason);
  const onOwn = () => joined.abort(own.reason);
  caller.addEventListener('abort', onCaller, { once: true });
  own.addEventListener('abort', onOwn, { once: true });
  joined.signal.addEventListener('abort', () => {
    caller.removeEventListener('abort', onCaller);
    own.removeEventListener('abort', onOwn);
  });
  if (caller.aborted) onCaller();
  return joined.signal;
}

/**
 * Joins the caller's signal and a time limit of `ms` (`Infinity`: none). The limit aborts with a
 * `TimeoutError` `DOMException` naming `what`.
 */
export function boundSignal(caller: AbortSignal | undefined, ms: number, what: string): Bound {
  const own = new AbortController();
  let expired = false;
  const limit = Math.max(0, ms);
  const timer =
    limit <= MAX_TIMER_MS
      ? setTimeout(() => {
          expired = true;
          own.abort(
            new DOMException(`${what} timed out after ${Math.round(limit)} ms`, 'TimeoutError'),
          );
        }, limit)
      : undefined;
  return {
    signal: caller ? follow(caller, own.signal) : own.signal,
    expired: () => expired,
    dispose: () => clearTimeout(timer),
  };
}

/**
 * Settles as `promise` does, or rejects with the signal's reason as soon as it aborts (already
 * aborted included). Leaves no listener behind.
 */
export function raceSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}
