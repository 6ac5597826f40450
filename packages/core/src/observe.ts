import type { EventSink, StoreOperation } from './events.js';

/**
 * The `observe` hook of a store call that reports it as a `store_call` event, or `undefined`
 * when nobody listens (no closure, no event, no clock read).
 * @internal
 */
export function storeCallObserver(
  sink: EventSink,
  method: StoreOperation,
  storageKey: string,
  operation: string | undefined,
): ((ok: boolean, durationMs: number) => void) | undefined {
  if (!sink.observed) return undefined;
  return (ok, durationMs) =>
    sink.emit({ type: 'store_call', storageKey, operation, method, ok, durationMs });
}

/** Milliseconds since `startedAt` (a `performance.now()` reading). @internal */
export function since(startedAt: number): number {
  return performance.now() - startedAt;
}
