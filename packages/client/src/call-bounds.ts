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

/** The controller of a joined signal, kept by the signal: they live and go together. */
const kController = Symbol('controller');

/**
 * The joined signals that follow each caller signal, weakly, behind one listener on it: a
 * long-lived caller signal (an app's shutdown signal) gets one listener in all, not one per
 * call, and keeps no joined signal alive.
 */
const followers = new WeakMap<AbortSignal, Set<WeakRef<AbortController>>>();

/** Takes a collected joined signal out of its caller's followers. */
const unfollow =
  typeof FinalizationRegistry === 'function'
    ? new FinalizationRegistry<() => void>((forget) => forget())
    : undefined;

/**
 * A signal that aborts when `caller` or `own` does. The caller's signal reaches it through a
 * weak reference kept in {@link followers}, dropped once the joined signal is collected: a
 * long-lived caller signal keeps nothing per call. (Node 20's `AbortSignal.any` kept about
 * 100 bytes per call on such a signal, for good: rev10a.)
 */
function follow(caller: AbortSignal, own: AbortSignal): AbortSignal {
  const joined = new AbortController();
  (joined.signal as AbortSignal & { [kController]?: AbortController })[kController] = joined;
  if (caller.aborted) {
    joined.abort(caller.reason);
    return joined.signal;
  }
  let set = followers.get(caller);
  if (!set) {
    const created = new Set<WeakRef<AbortController>>();
    set = created;
    followers.set(caller, created);
    caller.addEventListener(
      'abort',
      () => {
        followers.delete(caller);
        for (const ref of created) ref.deref()?.abort(caller.reason);
        created.clear();
      },
      { once: true },
    );
  }
  const ref = new WeakRef(joined);
  const mine = set;
  mine.add(ref);
  unfollow?.register(joined.signal, () => mine.delete(ref));
  own.addEventListener('abort', () => ref.deref()?.abort(own.reason), { once: true });
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
