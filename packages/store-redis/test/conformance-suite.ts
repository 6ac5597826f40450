import type { IdempotencyStore } from '@idem/core';
import { describeStoreConformance } from '@idem/store-conformance';
import { afterAll, beforeAll, describe } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import { type Client, deletePrefix, rawRecord, skipTarget, type Target } from './targets.js';

/**
 * Runs per property: IDEM_PROPERTY_RUNS if set, else in CI 200 on the standalone Redis and
 * 100 on the cluster (the same scripts, routed by slot: the cluster's own faults are the
 * suite's other checks; 100 s a target at 200 runs, CI's time budget), and 25 locally.
 */
function runsFor(target: Target): number {
  const fromEnv = Number(process.env.IDEM_PROPERTY_RUNS);
  if (fromEnv) return fromEnv;
  if (!process.env.CI) return 25;
  return target.name === 'cluster' ? 100 : 200;
}

/** The whole @idem/store-conformance suite against one Redis deployment, default options. */
export function describeRedisConformance(target: Target): void {
  describe.skipIf(skipTarget(target))(`@idem/store-redis on ${target.name}`, () => {
    // One client for the stores under test, a second one for raw reads and cleanup.
    let client: Client;
    let raw: Client;
    const prefixes = new WeakMap<IdempotencyStore, string>();

    beforeAll(async () => {
      client = await target.connect();
      raw = await target.connect();
    });
    afterAll(() => {
      client?.disconnect();
      raw?.disconnect();
    });

    describeStoreConformance(`redis (${target.name})`, {
      clock: 'server',
      // Every process of an application shares the records: races run across instances.
      sharedBackend: true,
      leaseMs: 300,
      numRuns: runsFor(target),
      createStore: ({ prefix }) => {
        const store = createRedisStore({ client, keyPrefix: prefix });
        prefixes.set(store, prefix);
        return store;
      },
      destroyStore: async (store) => {
        const prefix = prefixes.get(store);
        if (prefix) await deletePrefix(raw, prefix);
      },
      rawRead: (store, storageKey) => rawRecord(raw, (store as RedisStore).redisKey(storageKey)),
    });
  });
}
