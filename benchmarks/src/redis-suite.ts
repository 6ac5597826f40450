import { randomBytes } from 'node:crypto';
import { CachePersistenceLayer } from '@aws-lambda-powertools/idempotency/cache';
import { createRedisStore, recommendedRedisOptions } from '@idem/store-redis';
import { RedisStorageAdapter } from '@node-idempotency/storage-adapter-redis';
import { createClient } from '@redis/client';
import { Redis } from 'ioredis';
import { idemContender, nodeIdempotencyContender, powertoolsContender } from './contenders.js';
import type { Contender } from './engine-suite.js';
import { runEngineSuite } from './engine-suite.js';
import { forEachConcurrently, PREPARE_CONCURRENCY } from './measure.js';
import { RESULT_BYTES, resultFor } from './payload.js';
import type { Profile } from './profile.js';
import type { SuiteResult } from './result.js';

/**
 * Writes of one tick leave together: the connection is corked before a command and uncorked
 * at the end of the tick, or once 16 commands wait (what `@idem/store-redis` does with its
 * own connection, and node-redis 4 with every connection). Without it each ioredis command is
 * a system call of its own, and at 64 calls in flight the raw client did less than half the
 * GETs a second it does with it: no ceiling for a store that batches.
 */
function corkPerTick(client: Redis): () => void {
  let corked = false;
  let waiting = 0;
  const uncork = () => {
    corked = false;
    client.stream.uncork();
  };
  return () => {
    if (!corked) {
      corked = true;
      waiting = 0;
      client.stream.cork();
      process.nextTick(uncork);
    } else if (waiting >= 16) {
      client.stream.uncork();
      client.stream.cork();
      waiting = 0;
    }
    waiting++;
  };
}

/** The raw ceiling: what a cycle needs at least (claim, then store), and one read per replay. */
function rawRedisContender(client: Redis, prefix: string): Contender {
  const batch = corkPerTick(client);
  const cycle = async (key: string) => {
    batch();
    const claimed = await client.set(prefix + key, 'owner-token', 'PX', 30_000, 'NX');
    if (claimed !== 'OK') throw new Error(`raw: ${key} was already claimed`);
    batch();
    await client.set(prefix + key, JSON.stringify(resultFor(key)), 'PX', 86_400_000);
  };
  return {
    name: 'raw ioredis',
    role: 'raw',
    async prepare(keys) {
      await forEachConcurrently(keys, PREPARE_CONCURRENCY, cycle);
    },
    cycle,
    async replay(key) {
      batch();
      const value = await client.get(prefix + key);
      if (value?.length !== RESULT_BYTES) throw new Error(`raw: ${key} has no result`);
    },
  };
}

/** Deletes every key under `prefix` (SCAN + UNLINK, never KEYS). */
async function removePrefix(client: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await client.unlink(...keys);
  } while (cursor !== '0');
}

/** Redis version and persistence, for the header. */
export async function describeRedis(url: string): Promise<string> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    const version = /redis_version:(\S+)/.exec(await client.info('server'))?.[1] ?? '?';
    // Managed Redis often refuses CONFIG: the header then says it does not know.
    const aof = await client
      .config('GET', 'appendonly')
      .then((answer) => (answer as string[])[1] ?? '?')
      .catch(() => '?');
    return `Redis ${version} at ${url} (appendonly ${aof})`;
  } finally {
    client.disconnect();
  }
}

export async function runRedisSuite(
  profile: Profile,
  log: (line: string) => void,
): Promise<SuiteResult> {
  const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
  // Every key of this run lives under one prefix, removed after each round and at the end.
  const prefix = `idem-bench:${randomBytes(6).toString('hex')}:`;
  const options = { ...recommendedRedisOptions(), lazyConnect: true };
  const rawClient = new Redis(url, options);
  const idemClient = new Redis(url, options);
  const powertoolsClient = createClient({ url });
  const nodeIdemStorage = new RedisStorageAdapter({ url });
  const header = await describeRedis(url);
  try {
    await Promise.all([
      rawClient.connect(),
      idemClient.connect(),
      powertoolsClient.connect(),
      nodeIdemStorage.connect(),
    ]);
    const idemStore = createRedisStore({ client: idemClient, keyPrefix: `${prefix}idem:` });
    const powertoolsLayer = new CachePersistenceLayer({ client: powertoolsClient });
    return await runEngineSuite(
      {
        id: 'redis',
        title: 'Redis: one idempotent operation, ops/s',
        notes: [
          header,
          `cycle: a first execution on a new key (the operation returns a ${RESULT_BYTES}-byte JSON result); replay: the same call on a completed key`,
          'idem: @idem/store-redis (one Lua script per step: 2 round trips a cycle, 1 a replay); Powertools: CachePersistenceLayer on @redis/client (SET NX + SET a cycle, SET NX + GET a replay); node-idempotency: its Redis adapter on redis 4 (SET NX + SET, SET NX + GET)',
          "raw ioredis: the least a cycle needs, SET NX PX + SET PX, and one GET a replay, the writes of a tick sent together as idem's store sends its own; each contender has its own connection",
        ],
        concurrencies: profile.concurrency.redis,
        contenders: [
          rawRedisContender(rawClient, `${prefix}raw:`),
          idemContender(() => idemStore),
          powertoolsContender(() => powertoolsLayer, `${prefix}pt`),
          nodeIdempotencyContender(() => nodeIdemStorage, `${prefix}ni`),
        ],
        bounds: profile.engine,
        replayPool: profile.replayPool,
        afterRound: () => removePrefix(rawClient, prefix),
      },
      profile,
      log,
    );
  } finally {
    await removePrefix(rawClient, prefix).catch(() => undefined);
    rawClient.disconnect();
    idemClient.disconnect();
    await powertoolsClient.close().catch(() => undefined);
    await nodeIdemStorage.disconnect();
  }
}
