import assert from 'node:assert/strict';
import {
  type AcquireInput,
  createIdempotency,
  deriveStorageKey,
  type IdempotencyStore,
  type OutcomeCodec,
  type StoreCallContext,
} from '@idem/core';
import { acquireInput, assertAcquired, type ContractCheck } from './checks-records.js';
import type { Harness } from './harness.js';

/**
 * `h.store` whose acquires are sent only once core gave up on them (their signal aborted at
 * `storeTimeoutMs`), with that aborted context: a store that still applies such a call claims
 * the key for an owner nobody waits for, which core must give back (owner-checked).
 */
function sentAfterAbort(h: Harness): { store: IdempotencyStore; landed: Promise<unknown>[] } {
  const landed: Promise<unknown>[] = [];
  const acquire = (input: AcquireInput, call?: StoreCallContext) => {
    const signal = call?.signal;
    const late = new Promise<void>((resolve) => {
      if (!signal || signal.aborted) resolve();
      else signal.addEventListener('abort', () => resolve(), { once: true });
    }).then(() => h.store.acquire(input, call));
    landed.push(late.catch(() => undefined));
    return late;
  };
  const store: IdempotencyStore = {
    capabilities: h.store.capabilities,
    acquire,
    complete: (input, call) => h.store.complete(input, call),
    release: (input, call) => h.store.release(input, call),
    extend: (input, call) => h.store.extend(input, call),
    get: (key) => h.store.get(key),
  };
  return { store, landed };
}

/** The record of `key` once it satisfies `done` (looked at for at most about 3 s). */
async function eventually(h: Harness, key: string, done: (status?: string) => boolean) {
  for (let i = 0; i < 60; i++) {
    const record = await h.raw(key);
    if (done(record?.status)) return record;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return h.raw(key);
}

const keyServiceDown = async (): Promise<Uint8Array> => {
  throw new Error('key service down');
};

/** Checks of core's engine over the store: what it writes must come back as it wrote it. */
export const engineChecks: ContractCheck[] = [
  {
    group: 'executor',
    name: 'a codec that seals nothing: the plain not-recorded marker round-trips, OUTCOME_NOT_RECORDED after the lease, never a second run',
    async run(h) {
      // Seals nothing, opens nothing: only the marker core stores without the codec survives.
      const codec: OutcomeCodec = { seal: keyServiceDown, open: keyServiceDown };
      const idem = createIdempotency<number>({
        store: h.store,
        leaseMs: h.time.leaseMs,
        heartbeatMs: false,
        clock: h.time.clock,
        outcomeCodec: codec,
      });
      const scope = h.newKey();
      let runs = 0;
      const op = async () => ++runs;
      await assert.rejects(idem.execute({ key: 'k', scope }, op), { code: 'OUTCOME_NOT_RECORDED' });
      const storageKey = deriveStorageKey(scope, 'k');
      const record = await h.raw(storageKey);
      assert.equal(record?.status, 'completed', 'the marker completes the key');
      assert.equal(
        Buffer.from(record?.outcome ?? []).toString('latin1'),
        'IDN\x01not_serializable',
        'the marker is stored as core wrote it',
      );
      await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
      await assert.rejects(idem.execute({ key: 'k', scope }, op), {
        code: 'OUTCOME_NOT_RECORDED',
        reason: 'not_serializable',
      });
      assert.equal(runs, 1);
    },
  },
  {
    group: 'executor',
    name: 'the plain answered_outside marker (an HTTP handler that ran to its end after an outer answer) round-trips as written',
    async run(h) {
      const codec: OutcomeCodec = { seal: keyServiceDown, open: keyServiceDown };
      const idem = createIdempotency<number>({
        store: h.store,
        leaseMs: h.time.leaseMs,
        heartbeatMs: false,
        clock: h.time.clock,
        outcomeCodec: codec,
      });
      const scope = h.newKey();
      const begun = await idem.begin({ key: 'k', scope });
      assert.equal(begun.kind, 'acquired');
      if (begun.kind !== 'acquired') return;
      await begun.execution.completeNotRecorded('answered_outside');
      const record = await h.raw(deriveStorageKey(scope, 'k'));
      assert.equal(record?.status, 'completed', 'the marker completes the key');
      assert.equal(
        Buffer.from(record?.outcome ?? []).toString('latin1'),
        'IDN\x01answered_outside',
        'the marker is stored as core wrote it',
      );
      await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
      await assert.rejects(idem.begin({ key: 'k', scope }), {
        code: 'OUTCOME_NOT_RECORDED',
        reason: 'answered_outside',
      });
    },
  },
  {
    group: 'executor',
    name: 'an acquire sent after core gave up on it (its signal already aborted) that the store still applies is given back with its own owner token: the key is free again, and a key another owner holds is left untouched',
    async run(h) {
      const { store, landed } = sentAfterAbort(h);
      const idem = createIdempotency<string>({
        store,
        leaseMs: h.time.leaseMs,
        heartbeatMs: false,
        clock: h.time.clock,
        storeTimeoutMs: 50,
      });
      // A free key: the late acquire claims it for an owner nobody waits for; core releases it.
      const scope = h.newKey();
      const storageKey = deriveStorageKey(scope, 'k');
      await assert.rejects(idem.begin({ key: 'k', scope }), { code: 'STORE_UNAVAILABLE' });
      await Promise.all(landed);
      const freed = await eventually(h, storageKey, (status) => status !== 'in_progress');
      assert.notEqual(freed?.status, 'in_progress', 'the late acquisition is given back');
      assertAcquired(
        await h.store.acquire(acquireInput(h, storageKey, { fingerprint: '' })),
        'the key is free for the next caller at once, not after a lease',
      );

      // A key another owner holds: the late acquire finds it, and nothing of it is released.
      const held = h.newKey();
      const heldKey = deriveStorageKey(held, 'k');
      const other = acquireInput(h, heldKey, { fingerprint: '' });
      assertAcquired(await h.store.acquire(other));
      await assert.rejects(idem.begin({ key: 'k', scope: held }), { code: 'STORE_UNAVAILABLE' });
      await Promise.all(landed);
      await new Promise((resolve) => setTimeout(resolve, 200));
      const still = await h.raw(heldKey);
      assert.equal(still?.status, 'in_progress', "the other owner's record stays in progress");
      assert.equal(still?.owner, other.owner, "the other owner's record keeps its owner");
      assert.deepEqual(
        await h.store.complete({
          key: heldKey,
          owner: other.owner,
          outcome: new TextEncoder().encode('done'),
          retentionMs: 60_000,
        }),
        { ok: true },
        'the other owner still completes its record',
      );
    },
  },
];
