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
 * @param options.unref the time limit does not keep the process alive (background work)
 */
export function callStore<T>(
  operation: StoreOperation,
  timeoutMs: number,
  fn: () => Promise<T>,
  options: { unref?: boolean } = {},
): Promise<T> {
  return guardStoreCall(ENGINE_RULES, operation, fn, { timeoutMs, unref: options.unref });
}
