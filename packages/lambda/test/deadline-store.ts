import { setTimeout as sleep } from 'node:timers/promises';
import { deriveStorageKey, type IdempotencyStore } from '@idem/core';
import { functionScope, makeIdempotent } from '../src/index.js';

/**
 * `store` whose `method` answers `delayMs` late, as a slow service would; a call whose signal
 * aborted meanwhile is cut (a store may cut it: StoreCallContext) and applies nothing.
 * `seen` records, per call, whether its signal had aborted when the service got to it.
 */
export function slowed(
  store: IdempotencyStore,
  method: 'acquire' | 'complete',
  delayMs: number,
  seen: boolean[],
): IdempotencyStore {
  const slow = async (input: never, call?: { signal: AbortSignal }) => {
    const signal = call?.signal;
    await sleep(delayMs);
    seen.push(signal?.aborted === true);
    if (signal?.aborted) throw signal.reason;
    return (store[method] as (input: never, call?: unknown) => Promise<never>)(input, call);
  };
  return {
    capabilities: store.capabilities,
    acquire: method === 'acquire' ? slow : (input, call) => store.acquire(input, call),
    complete: method === 'complete' ? slow : (input, call) => store.complete(input, call),
    release: (input, call) => store.release(input, call),
    extend: (input, call) => store.extend(input, call),
    get: (key) => store.get(key),
  };
}

export const event = { orderId: 'o-1' };

/** A handler that charges (counted in `runs`) on `store`, after `workMs`. */
export function charging(store: IdempotencyStore, workMs = 0) {
  const counts = { runs: 0 };
  const handler = makeIdempotent(
    async () => {
      counts.runs += 1;
      if (workMs > 0) await sleep(workMs);
      return 'charged';
    },
    { store, scope: functionScope, key: (e: typeof event) => e.orderId },
  );
  return { handler, counts };
}
export const storageKey = deriveStorageKey(['lambda', 'orders-fn'], 'o-1');
