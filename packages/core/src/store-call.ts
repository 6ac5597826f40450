import { guardStoreCall, type StoreErrorRules } from './adapter-kit/store-errors.js';
import type { StoreOperation } from './events.js';

const ENGINE_RULES: StoreErrorRules = { service: 'Store' };

/**
 * Runs one store call with a time limit. Errors that are already `IdemError`s pass through;
 * anything else becomes a `StoreUnavailableError` with the original as `cause`. A call that
 * times out may still be applied by the store: every write is owner-checked, so a late
 * application cannot overwrite a newer owner, and a repeat of it is recognised (redelivery).
 *
 * One timer and one promise a call (this runs on every store call of every request).
 *
 */
export function callStore<T>(
  operation: StoreOperation,
  timeoutMs: number,
  fn: () => Promise<T>,
  options: StoreCallOptions = {},
): Promise<T> {
  const { observe } = options;
  if (observe === undefined) return timedCall(operation, timeoutMs, fn, options.unref === true);
  const startedAt = performance.now();
  const call = timedCall(operation, timeoutMs, fn, options.unref === true);
  const settled = (ok: boolean) => {
    try {
      observe(ok, performance.now() - startedAt);
    } catch {
      // An observer's bug must not become an unhandled rejection.
    }
  };
  call.then(
    () => settled(true),
    () => settled(false),
  );
  return call;
}

/** Options of {@link callStore}. */
export interface StoreCallOptions {
  /** The time limit does not keep the process alive (background work). */
  unref?: boolean;
  /**
   * Told once the call settled: whether it answered, and how long it took in ms (a timed-out
   * call: its time limit). For latency metrics; what it throws is ignored.
   */
  observe?: (ok: boolean, durationMs: number) => void;
}

function timedCall<T>(
  operation: StoreOperation,
  timeoutMs: number,
  fn: () => Promise<T>,
  unref: boolean,
): Promise<T> {
  return guardStoreCall(ENGINE_RULES, operation, fn, { timeoutMs, unref });
}
