/**
 * Where a replay's script time goes inside Redis: the acquire script on a completed record
 * against stripped-down scripts called with the same keys and arguments, pipelined (so that
 * socket I/O is spread thin), as µs of `INFO commandstats` per EVALSHA.
 *
 *   pnpm --filter @idem/store-redis exec tsx bench/lua-cost.ts
 *
 * Env: REDIS_URL (default redis://127.0.0.1:6379; other clients' scripts add to the
 * figures: use a Redis of its own).
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { createRedisStore } from '../src/index.js';
import { ACQUIRE_LUA, packDurations } from '../src/scripts.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const ROUNDS = 5;
const CALLS = 10_000;

const variants: Record<string, string> = {
  'acquire script (replay)': ACQUIRE_LUA,
  'return 1 (same arguments)': 'return 1',
  'GET, return it': "return redis.call('GET', KEYS[1])",
  'GET + TIME, return both':
    "local v = redis.call('GET', KEYS[1]) local t = redis.call('TIME') return {0, t[1], v}",
};

async function evalshaUsec(client: Redis): Promise<number> {
  const found = /cmdstat_evalsha:calls=\d+,usec=(\d+)/.exec(await client.info('commandstats'));
  return found ? Number(found[1]) : 0;
}

async function main(): Promise<void> {
  const client = new Redis(url);
  const prefix = `idem-lua:${randomBytes(4).toString('hex')}:`;
  const store = createRedisStore({ client, keyPrefix: prefix });
  const owner = randomBytes(18).toString('hex');
  const lease = { leaseMs: 30_000, retentionMs: 86_400_000 };
  await store.acquire({ key: 'k', fingerprint: 'f'.repeat(64), owner, ...lease });
  await store.complete({ key: 'k', owner, outcome: new Uint8Array(580), retentionMs: 86_400_000 });
  const args = [store.redisKey('k'), store.fenceKey('k'), 'f'.repeat(64), 'o'.repeat(36)];
  const durations = packDurations(30_000, 86_400_000, 86_400_000);
  const shas: Record<string, string> = {};
  for (const [name, lua] of Object.entries(variants))
    shas[name] = (await client.script('LOAD', lua)) as string;
  const figures: Record<string, number[]> = {};
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of Object.keys(variants)) {
      const before = await evalshaUsec(client);
      for (let batch = 0; batch < CALLS / 250; batch++) {
        const pipeline = client.pipeline();
        for (let i = 0; i < 250; i++) pipeline.evalsha(shas[name]!, 2, ...args, durations);
        await pipeline.exec();
      }
      const spent = ((await evalshaUsec(client)) - before) / CALLS;
      figures[name] = [...(figures[name] ?? []), spent];
    }
  }
  console.log(`\nRedis at ${url}: µs per EVALSHA (commandstats), median of ${ROUNDS} rounds\n`);
  for (const [name, values] of Object.entries(figures)) {
    const median = values.sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
    console.log(`| ${name} | ${median.toFixed(2)} |`);
  }
  await client.del(store.redisKey('k'), store.fenceKey('k'));
  client.disconnect();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
