/**
 * Time limits and the caller's signal, joined, so that no step of a call outlives either.
 */

/** setTimeout cannot wait past 2^31 - 1 ms; a limit that far away is no limit in practice. */
export const MAX_TIMER_MS = 2_147_483_647;

/** A signal that aborts when the caller's signal does or when a time limit passes. */
export interface Bound {
  signal: AbortSignal;
  /** True once the time limit passed (rather than the caller aborting). */
  expired(): boolean;
  /**
   * Stops the timer. Without `keepWhile`, the caller's abort stops reaching `signal` (the step
   * is over). With it, the caller's abort still reaches `signal` for as long as `keepWhile` is
   * alive (a response body being read with that signal), and no longer once it is collected.
   */
  dispose(keepWhile?: object | null): void;
}

/**
 * The controllers of the joined signals that follow each caller signal, behind one listener
 * on it: a long-lived caller signal (an app's shutdown signal) gets one listener in all, not
 * one per call. Each controller is held (strongly: a fetch wrapper may hold its signal only
 * weakly, as `AbortSignal.any` does) until its step is over or what it serves is collected.
 */
const followers = new WeakMap<AbortSignal, Set<AbortController>>();

/** Forgets a joined signal once what it serves (a response body) is collected. */
const forgetting =
  typeof FinalizationRegistry === 'function'
    ? new FinalizationRegistry<() => void>((forget) => forget())
    : undefined;

interface Followed {
  signal: AbortSignal;
  /** The caller's abort no longer reaches `signal`. */
  forget(): void;
}

/**
 * A signal that aborts when `caller` or `own` does. (Node 20's `AbortSignal.any` kept about
 * 100 bytes per call on a long-lived caller signal, for good: rev10a.)
 */
function follow(caller: AbortSignal, own: AbortSignal): Followed {
  const joined = new AbortController();
  if (caller.aborted) {
    joined.abort(caller.reason);
    return { signal: joined.signal, forget: () => {} };
  }
  let set = followers.get(caller);
  if (!set) {
    const created = new Set<AbortController>();
    set = created;
    followers.set(caller, created);
    caller.addEventListener(
      'abort',
      () => {
        followers.delete(caller);
        const all = [...created];
        created.clear();
        for (const controller of all) controller.abort(caller.reason);
      },
      { once: true },
    );
  }
  const mine = set;
  mine.add(joined);
  own.addEventListener('abort', () => joined.abort(own.reason), { once: true });
  return { signal: joined.signal, forget: () => mine.delete(joined) };
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
  const followed = caller ? follow(caller, own.signal) : undefined;
  return {
    signal: followed ? followed.signal : own.signal,
    expired: () => expired,
    dispose: (keepWhile) => {
      clearTimeout(timer);
      if (!followed) return;
      if (keepWhile && forgetting) forgetting.register(keepWhile, followed.forget);
      else if (!keepWhile) followed.forget();
    },
  };
}

/** A signal that aborts when the caller's signal or another one does. */
export interface Joined {
  signal: AbortSignal;
  /** As {@link Bound.dispose}: the caller's abort stops reaching `signal` (or once `keepWhile` is collected). */
  dispose(keepWhile?: object | null): void;
}

/** Joins the caller's signal (when there is one) and `other`, with no time limit. */
export function joinSignals(caller: AbortSignal | undefined, other: AbortSignal): Joined {
  if (!caller) return { signal: other, dispose: () => {} };
  const followed = follow(caller, other);
  if (other.aborted && !followed.signal.aborted) {
    // follow() listens for `other` to abort; one aborted already does not fire again.
    const joined = new AbortController();
    joined.abort(other.reason);
    followed.forget();
    return { signal: joined.signal, dispose: () => {} };
  }
  return {
    signal: followed.signal,
    dispose: (keepWhile) => {
      if (keepWhile && forgetting) forgetting.register(keepWhile, followed.forget);
      else if (!keepWhile) followed.forget();
    },
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
