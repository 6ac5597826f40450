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
