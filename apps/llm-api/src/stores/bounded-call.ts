import { IdemError, StoreUnavailableError } from '@idem/core';
import { StaleFenceError } from '../ledger/ledger.js';

/**
 * Runs one store call made outside the idempotency layer (ledger, counters, readiness)
 * with the same time limit the idempotency layer has (`IDEM_STORE_TIMEOUT_MS`), so a silent
 * connection never holds a request longer than that.
 *
 * `fn` gets a signal that aborts at the limit, for clients that take one (the AWS SDK's
 * `abortSignal`). Whether or not the client honours it, the caller gets a
 * `StoreUnavailableError` at the limit. A `StaleFenceError` or an `IdemError` passes
 * through; any other failure becomes a `StoreUnavailableError` with the original as `cause`,
 * which the app answers with 503 + Retry-After.
 */
export async function callWithin<T>(
  what: string,
  timeoutMs: number,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const call = fn(controller.signal);
    // A late rejection of the abandoned call must not surface as unhandled.
    call.catch(() => undefined);
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new StoreUnavailableError(
          `Store call ${what} timed out after ${timeoutMs} ms`,
        );
        controller.abort(error);
        reject(error);
      }, timeoutMs);
    });
    return await Promise.race([call, limit]);
  } catch (error) {
    if (error instanceof StaleFenceError || error instanceof IdemError) throw error;
    const message = error instanceof Error ? error.message : String(error);
    throw new StoreUnavailableError(`Store call ${what} failed: ${message}`, { cause: error });
  } finally {
    clearTimeout(timer);
  }
}
