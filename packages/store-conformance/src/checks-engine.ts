import assert from 'node:assert/strict';
import { createIdempotency, deriveStorageKey, type OutcomeCodec } from '@idem/core';
import type { ContractCheck } from './checks-records.js';

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
];
