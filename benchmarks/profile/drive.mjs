/**
 * A small driver for `node --cpu-prof`: idem's execute() on one store, one operation, one
 * concurrency, for a fixed number of calls (after a warm-up), printing ops/s and CPU µs/op.
 *
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof profile/drive.mjs memory replay 64 200000
 *   REDIS_URL=redis://127.0.0.1:6379 node profile/drive.mjs redis cycle 64 100000
 *
 * Arguments: store (memory | redis), operation (cycle | replay), concurrency, calls.
 * `NO_CORK=1` turns the Redis store's write batching off (its connection never corked).
 * Then `node profile/top.mjs <file.cpuprofile>` lists the functions by self time.
 */
import { randomBytes } from 'node:crypto';
import { createIdempotency } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisStore, recommendedRedisOptions } from '@idem/store-redis';
import { Redis } from 'ioredis';

const [storeName = 'memory', op = 'replay', concurrencyText = '64', callsText = '100000'] =
  process.argv.slice(2);
const concurrency = Number(concurrencyText);
const calls = Number(callsText);
const result = (key) => ({ key, data: 'x'.repeat(Math.max(0, 512 - 22 - key.length)) });

let client;
let store;
/** Key prefixes this run wrote to Redis: deleted at the end (SCAN + UNLINK). */
const prefixes = [];
if (storeName === 'redis') {
  client = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', {
    ...recommendedRedisOptions(),
    lazyConnect: true,
  });
  await client.connect();
  if (process.env.NO_CORK) {
    client.stream.cork = () => {};
    client.stream.uncork = () => {};
  }
  const keyPrefix = `idem-prof:${randomBytes(4).toString('hex')}:`;
  store = createRedisStore({ client, keyPrefix });
  prefixes.push(keyPrefix);
} else {
  store = createMemoryStore({
    maxEntries: 2 * calls + 10_000,
    maxBytes: (2 * calls + 10_000) * 4096,
  });
}
const idem = createIdempotency({ store });
// 'ni': @node-idempotency/core on its memory adapter, the same calls (for reference).
let niStorage;
if (storeName === 'ni') {
  niStorage = new (await import('@node-idempotency/storage-adapter-memory')).MemoryStorageAdapter();
} else if (storeName === 'ni-redis') {
  const { RedisStorageAdapter } = await import('@node-idempotency/storage-adapter-redis');
  niStorage = new RedisStorageAdapter({ url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' });
  await niStorage.connect();
}
const niPrefix = `ni${randomBytes(4).toString('hex')}`;
if (storeName === 'ni-redis') prefixes.push(niPrefix);
const ni = niStorage
  ? new (await import('@node-idempotency/core')).Idempotency(niStorage, {
      cacheKeyPrefix: niPrefix,
    })
  : undefined;
const request = (key) => ({ method: 'POST', path: '/op', headers: { 'idempotency-key': key } });
const engine = ni
  ? {
      async execute({ key }, operation) {
        const req = request(key);
        const cached = await ni.onRequest(req);
        if (cached !== undefined) return { value: cached.body, replayed: true };
        const value = await operation();
        await ni.onResponse(req, { body: value });
        return { value, replayed: false };
      },
    }
  : idem;
const pool = Array.from({ length: 256 }, (_, i) => `replay-${i}`);
for (const key of pool) await engine.execute({ key }, async () => result(key));

let next = 0;
let seq = 0;
const run = randomBytes(4).toString('hex');
async function one(i) {
  if (op === 'cycle') {
    const key = `c-${run}-${seq++}`;
    const { replayed } = await engine.execute({ key }, async () => result(key));
    if (replayed) throw new Error('replayed');
  } else {
    const key = pool[i % pool.length];
    const { replayed, value } = await engine.execute({ key }, async () => {
      throw new Error('ran');
    });
    if (!replayed || value.key !== key) throw new Error('not replayed');
  }
}
async function runAll(n) {
  next = 0;
  const worker = async () => {
    while (next < n) await one(next++);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}
await runAll(Math.min(20_000, calls / 5));
const cpu0 = process.cpuUsage();
const t0 = performance.now();
await runAll(calls);
const ms = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
console.log(
  `${storeName} ${op} c${concurrency}: ${Math.round((calls / ms) * 1000)} ops/s, ${((cpu.user + cpu.system) / calls).toFixed(2)} CPU µs/op (user ${(cpu.user / calls).toFixed(2)}, system ${(cpu.system / calls).toFixed(2)})`,
);
await store.close?.();
if (prefixes.length > 0) {
  const cleaner = client ?? new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  for (const prefix of prefixes) {
    let cursor = '0';
    do {
      const [next, keys] = await cleaner.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      if (keys.length > 0) await cleaner.unlink(...keys);
      cursor = next;
    } while (cursor !== '0');
  }
  if (cleaner !== client) cleaner.disconnect();
}
client?.disconnect();
await niStorage?.disconnect?.();
