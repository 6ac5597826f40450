import { ManualClock, StoreFullError } from '@idem/core';
import { expect } from 'vitest';
import { createMemoryStore } from '../../src/index.js';

export const RETENTION_MS = 60_000;
export const LEASE_MS = 1_000;

/** A memory store of `maxBytes` on a manual clock, with acquire and complete by key (owner `o-<key>`). */
export function headroomStore(maxBytes: number) {
  const clock = new ManualClock();
  const store = createMemoryStore({ clock, sweepIntervalMs: 0, maxBytes });
  const acquire = (key: string, owner = `o-${key}`) =>
    store.acquire({ key, owner, fingerprint: 'fp', leaseMs: LEASE_MS, retentionMs: RETENTION_MS });
  const complete = (key: string, outcome: Uint8Array, owner = `o-${key}`) =>
    store.complete({ key, owner, outcome, retentionMs: RETENTION_MS });
  return { clock, store, acquire, complete };
}

/** Acquires `key`; true when taken, false when the store answered StoreFullError. */
export async function took(
  acquire: (key: string) => Promise<unknown>,
  key: string,
): Promise<boolean> {
  const result = await acquire(key).catch((e: unknown) => e);
  if (result instanceof StoreFullError) return false;
  expect(result).toMatchObject({ kind: 'acquired' });
  return true;
}
