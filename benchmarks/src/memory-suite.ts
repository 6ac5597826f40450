import { createMemoryStore, type MemoryStore } from '@idem/store-memory';
import { MemoryStorageAdapter } from '@node-idempotency/storage-adapter-memory';
import { idemContender, nodeIdempotencyContender } from './contenders.js';
import { type Contender, runEngineSuite } from './engine-suite.js';
import { forEachConcurrently, PREPARE_CONCURRENCY } from './measure.js';
import { RESULT_BYTES, resultFor } from './payload.js';
import type { Profile } from './profile.js';
import type { SuiteResult } from './result.js';

/** The ceiling in process: two Map writes a cycle, one read a replay, each call a promise. */
function rawMapContender(): Contender {
  let map = new Map<string, string>();
  const cycle = async (key: string) => {
    if (map.has(key)) throw new Error(`raw: ${key} was already claimed`);
    map.set(key, 'owner-token');
    map.set(key, JSON.stringify(resultFor(key)));
  };
  return {
    name: 'raw Map',
    role: 'raw',
    async prepare(keys) {
      map = new Map();
      await forEachConcurrently(keys, PREPARE_CONCURRENCY, cycle);
    },
    cycle,
    async replay(key) {
      if (map.get(key)?.length !== RESULT_BYTES) throw new Error(`raw: ${key} has no result`);
    },
  };
}

export async function runMemorySuite(
  profile: Profile,
  log: (line: string) => void,
): Promise<SuiteResult> {
  // A fresh store each round and concurrency (prepare), sized so that no measurement fills
  // it: a full store refuses new keys rather than forget a completed one.
  const maxEntries = profile.engine.maxOps + profile.warmup.maxOps + profile.replayPool + 1_000;
  let store: MemoryStore | undefined;
  const openStore = () => {
    void store?.close();
    store = createMemoryStore({ maxEntries, maxBytes: maxEntries * 4_096 });
    return store;
  };
  try {
    return await runEngineSuite(
      {
        id: 'memory',
        title: 'In process: one idempotent operation, ops/s',
        notes: [
          `cycle: a first execution on a new key (the operation returns a ${RESULT_BYTES}-byte JSON result); replay: the same call on a completed key`,
          `idem: @idem/store-memory (maxEntries ${maxEntries.toLocaleString('en-US')}, so no measurement fills it); node-idempotency: @node-idempotency/storage-adapter-memory (an unbounded Map); each starts empty every round`,
          'Powertools has no in-process persistence layer (only DynamoDB and Redis/Valkey), so it is not in this table',
          'raw Map: two Map writes a cycle, one read a replay, each call an async function',
        ],
        concurrencies: profile.concurrency.memory,
        contenders: [
          rawMapContender(),
          idemContender(openStore),
          nodeIdempotencyContender(() => new MemoryStorageAdapter(), 'ni'),
        ],
        bounds: profile.engine,
        replayPool: profile.replayPool,
      },
      profile,
      log,
    );
  } finally {
    await store?.close();
  }
}
