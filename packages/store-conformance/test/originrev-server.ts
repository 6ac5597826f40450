/**
 * originrev: the two checks every server-clock store (Redis, PostgreSQL) runs, as one
 * `describe`: the model of the "Origin" rules on one key (40 sequences of at most 12 steps,
 * 400 ms leases) and the engine-level property (12 scenarios, 250 ms leases).
 */
import type { IdempotencyStore } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { checkOriginEngine, serverEngineTarget } from './originrev-engine.js';
import { checkOriginModel, serverOriginTarget } from './originrev-model.js';

export function describeServerOrigin(
  name: string,
  makeStore: () => IdempotencyStore,
  newKey: () => string,
): void {
  describe(`originrev: the ${name} store against the origin model`, () => {
    it('every answer as the contract says (40 sequences of one key, real leases)', async () => {
      const store = makeStore();
      const keys = (n: number) => Array.from({ length: n }, newKey);
      const tally = await checkOriginModel(() => serverOriginTarget(store, keys), {
        clock: 'server',
        keys: 1,
        numRuns: 40,
      });
      expect(tally.carried).toBeGreaterThan(5);
      console.log(`originrev ${name} model:`, JSON.stringify(tally));
    }, 240_000);

    it('through the engine: failures, crashes, stalls past the lease, lost and redelivered calls: one originId a key (12 scenarios)', async () => {
      const store = makeStore();
      const tally = await checkOriginEngine(async () => serverEngineTarget(store), 12);
      console.log(`originrev ${name} engine:`, JSON.stringify(tally));
    }, 240_000);
  });
}
