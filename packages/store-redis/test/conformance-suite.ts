import type { IdempotencyStore } from '@idem/core';
import { describeStoreConformance } from '@idem/store-conformance';
import { afterAll, beforeAll, describe } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import { type Client, deletePrefix, rawRecord, skipTarget, type Target } from './targets.js';

/** Runs per property: IDEM_PROPERTY_RUNS if set, else 200 in CI and 25 locally. */
const numRuns = Number(process.env.IDEM_PROPERTY_RUNS) || (process.env.CI ? 200 : 25);

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
      numRuns,
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
