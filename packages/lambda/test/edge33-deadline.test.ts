import { setTimeout as sleep } from 'node:timers/promises';
import { StoreUnavailableError } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { functionScope, makeIdempotent } from '../src/index.js';
import { charging, event, slowed, storageKey } from './deadline-store.js';
import { fakeContext } from './lambda-env.js';

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

  it('a completion made near the deadline is not cut at the safety margin: it goes on under storeTimeoutMs (rev33e: cut, it could only fail where it would have landed)', async () => {
    const memory = createMemoryStore();
    const seen: boolean[] = [];
    const { handler } = charging(slowed(memory, 'complete', 1_000, seen), 300);
    // 700 ms left: the handler uses 300, the completion takes 1 s, within storeTimeoutMs.
    await expect(handler(event, fakeContext(700))).resolves.toBe('charged');
    expect(seen).toEqual([false]);
    expect((await memory.get(storageKey))?.status).toBe('completed');
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
