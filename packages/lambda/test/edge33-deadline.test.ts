import { setTimeout as sleep } from 'node:timers/promises';
import { deriveStorageKey, type IdempotencyStore, StoreUnavailableError } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { functionScope, makeIdempotent } from '../src/index.js';
import { fakeContext } from './lambda-env.js';

/**
 * `store` whose `method` answers `delayMs` late, as a slow service would; a call whose signal
 * aborted meanwhile is cut (a store may cut it: StoreCallContext) and applies nothing.
 * `seen` records, per call, whether its signal had aborted when the service got to it.
 */
function slowed(
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

const event = { orderId: 'o-1' };

/** A handler that charges (counted in `runs`) on `store`, after `workMs`. */
function charging(store: IdempotencyStore, workMs = 0) {
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
const storageKey = deriveStorageKey(['lambda', 'orders-fn'], 'o-1');

describe('store calls are bounded by the invocation time left (edge33)', () => {
  it('an acquire that would land within the safety margin before the deadline is given up at the margin, not at storeTimeoutMs: the handler never runs, nothing is written', async () => {
    const memory = createMemoryStore();
    const seen: boolean[] = [];
    const { handler, counts } = charging(slowed(memory, 'acquire', 1_500, seen));
    // 2 s left, storeTimeoutMs 5 s (the default), a 2 s lease whose runway ends at 1.8 s: the
    // acquire may take at most the time left minus the margin (1 s), not land at 1.5 s.
    await expect(handler(event, fakeContext(2_000))).rejects.toBeInstanceOf(StoreUnavailableError);
    await sleep(1_700);
    expect(seen).toEqual([true]);
    expect(counts.runs).toBe(0);
    expect(await memory.get(storageKey)).toBeUndefined();
    await memory.close?.();
  });

  it('with too little time left to claim the key the invocation fails at once with an unsent StoreUnavailableError and writes nothing', async () => {
    const memory = createMemoryStore();
    const { handler, counts } = charging(memory);
    const failure = await handler(event, fakeContext(5)).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(StoreUnavailableError);
    expect((failure as StoreUnavailableError).unsent).toBe(true);
    expect(counts.runs).toBe(0);
    expect(await memory.get(storageKey)).toBeUndefined();
    await memory.close?.();
  });

  it('a completion made near the deadline is bounded by the time left then, not by storeTimeoutMs', async () => {
    const memory = createMemoryStore();
    const seen: boolean[] = [];
    const { handler } = charging(slowed(memory, 'complete', 1_000, seen), 300);
    // 700 ms left: the handler uses 300, the completion could take 5 s (storeTimeoutMs).
    await expect(handler(event, fakeContext(700))).rejects.toBeInstanceOf(StoreUnavailableError);
    await sleep(1_200);
    // The first completion's signal aborted before the slow service got to it (old: it landed
    // then, past the deadline). Core retries it in the background, past the deadline under
    // storeTimeoutMs (a late completion beats a second run).
    expect(seen[0]).toBe(true);
    await memory.close?.();
  });

  it('a context without a clock keeps storeTimeoutMs (no deadline)', async () => {
    const memory = createMemoryStore();
    const seen: boolean[] = [];
    const handler = makeIdempotent(async () => 'charged', {
      store: slowed(memory, 'acquire', 200, seen),
      scope: functionScope,
      key: (e: typeof event) => e.orderId,
    });
    const context = { functionName: 'orders-fn' } as never;
    await expect(handler(event, context)).resolves.toBe('charged');
    expect(seen).toEqual([false]);
    await memory.close?.();
  });
});
