import { IdemError, StoreUnavailableError } from './errors.js';
import type { StoreOperation } from './events.js';

/**
 * Runs one store call with a time limit. Errors that are already `IdemError`s pass through;
 * anything else becomes a `StoreUnavailableError` with the original as `cause`. A call that
 * times out may still be applied by the store: every write is owner-checked, so a late
 * application cannot overwrite a newer owner, and a repeat of it is recognised (redelivery).
 *
 * @param options.unref the time limit does not keep the process alive (background work)
 */
export async function callStore<T>(
  operation: StoreOperation,
  timeoutMs: number,
  fn: () => Promise<T>,
  options: { unref?: boolean } = {},
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const call = fn();
    if (!(timeoutMs > 0 && Number.isFinite(timeoutMs))) return await call;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new StoreUnavailableError(`Store ${operation} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      if (options.unref) timer.unref?.();
    });
    // A late rejection of the abandoned call must not surface as unhandled.
    call.catch(() => {});
    return await Promise.race([call, timeout]);
  } catch (error) {
    if (error instanceof IdemError) throw error;
    throw new StoreUnavailableError(`Store ${operation} failed: ${describe(error)}`, {
      cause: error,
    });
  } finally {
    if (timer !== undefined) clearTimeout(timer);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
