/**
 * rev32b: the suite's wrapper of the store under test hands each call's `StoreCallContext`
 * (core's time-limit signal) on to the store. Before, it dropped it: a store that cuts its
 * requests with that signal (the DynamoDB store) ran the whole property suite with signals
 * that never reached it, so that path was never exercised.
 */
import type { IdempotencyStore, StoreCallContext } from '@idem/core';
import { systemClock } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { ObservedStore } from '../src/index.js';

describe('ObservedStore', () => {
  it('passes the call context of acquire, complete, release and extend on', async () => {
    const seen: Record<string, StoreCallContext | undefined> = {};
    const inner: IdempotencyStore = {
      capabilities: { clock: 'server' },
      acquire: async (_input, call) => {
        seen.acquire = call;
        return {
          kind: 'acquired',
          fence: 1,
          leaseUntil: Date.now() + 1_000,
          takeover: false,
          origin: 'o',
        };
      },
      complete: async (_input, call) => {
        seen.complete = call;
        return { ok: true };
      },
      release: async (_input, call) => {
        seen.release = call;
        return { ok: true };
      },
      extend: async (_input, call) => {
        seen.extend = call;
        return { ok: true };
      },
      get: async () => undefined,
    };
    const store = new ObservedStore(inner, systemClock, [], 0, undefined);
    const context: StoreCallContext = { signal: new AbortController().signal };
    const base = { key: 'k', owner: 'o', retentionMs: 1_000 };
    await store.acquire({ ...base, fingerprint: 'f', leaseMs: 1_000 }, context);
    await store.extend({ ...base, leaseMs: 1_000 }, context);
    await store.complete({ ...base, outcome: new Uint8Array([1]) }, context);
    await store.release(base, context);
    for (const name of ['acquire', 'complete', 'release', 'extend'])
      expect(seen[name], name).toBe(context);
  });
});
