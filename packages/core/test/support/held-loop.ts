import { expect } from 'vitest';
import type { FakeStore } from './fake-store.js';

/** Holds the event loop for `ms`: no timer runs meanwhile. */
export function holdLoop(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

/** The one value of `values` (asserted). */
export function only<T>(values: Iterable<T>): T {
  const all = [...values];
  expect(all).toHaveLength(1);
  return all[0] as T;
}

/** Another process's retry takes the (passed) lease of the store's one record over. */
export async function takeOver(store: FakeStore): Promise<void> {
  const key = only(store.records.keys());
  const taken = await store.acquire({
    key,
    owner: 'another-owner',
    fingerprint: only(store.records.values()).fingerprint,
    leaseMs: 10_000,
    retentionMs: 60_000,
  });
  expect(taken).toMatchObject({ kind: 'acquired', takeover: true });
}

/**
 * `base` with its first acquire applied at once and answered `acquireMs` later, and every
 * extend applied `extendMs` after its send.
 */
export function slowAnswers(base: FakeStore, acquireMs: number, extendMs: number): FakeStore {
  const store = Object.create(base) as FakeStore;
  let firstAcquire = true;
  store.acquire = async (input) => {
    const result = await base.acquire(input);
    if (firstAcquire) {
      firstAcquire = false;
      await new Promise((resolve) => setTimeout(resolve, acquireMs));
    }
    return result;
  };
  store.extend = async (input) => {
    await new Promise((resolve) => setTimeout(resolve, extendMs));
    return base.extend(input);
  };
  return store;
}
