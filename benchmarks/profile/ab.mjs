/**
 * Two builds of the engine in ONE process, rounds alternating: CPU µs per `execute()` call
 * (cycle: a fresh key, the operation runs and its result is recorded; replay: a recorded
 * key) on the memory store or the Redis store, at one concurrency. Separate processes on a
 * shared machine differ by more than most engine changes do; one process sees the same load.
 *
 *   node profile/ab.mjs --before /copy/of/main/packages [--after ../packages] \
 *     [--store memory|redis] [--op cycle|replay] [--concurrency 64] [--calls 50000] [--rounds 6]
 *
 * `--before` is the `packages` folder of another built checkout (its core, store-memory and
 * store-redis `dist`). Prints each round and the median CPU µs per call of each build; with
 * REDIS_PID (a redis-server on this machine, used by nothing else), the server's CPU µs per
 * call as well (`/proc/<pid>/stat`, so at the kernel's 10 ms tick: use enough calls).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    before: { type: 'string' },
    after: { type: 'string', default: new URL('../../packages', import.meta.url).pathname },
    store: { type: 'string', default: 'memory' },
    op: { type: 'string', default: 'cycle' },
    concurrency: { type: 'string', default: '64' },
    calls: { type: 'string', default: '50000' },
    rounds: { type: 'string', default: '6' },
  },
});
if (!values.before) throw new Error('--before DIR: the packages folder of another built checkout');
const concurrency = Number(values.concurrency);
const calls = Number(values.calls);
const redisPid = process.env.REDIS_PID;
/** The redis-server process's CPU time in µs (user + system), or 0 without REDIS_PID. */
const serverCpu = () => {
  if (!redisPid) return 0;
  const fields = readFileSync(`/proc/${redisPid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100;
};
const result = (key) => ({ key, data: 'x'.repeat(Math.max(0, 512 - 22 - key.length)) });

let client;
if (values.store === 'redis') {
  const { Redis } = await import(`${values.after}/store-redis/node_modules/ioredis/built/index.js`);
  client = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
  });
  await client.connect();
}

/** Every key of this run lives under it; deleted at the end (SCAN + UNLINK). */
const runPrefix = `idem-ab:${randomBytes(4).toString('hex')}:`;

async function load(root, label) {
  const core = await import(`${root}/core/dist/index.js`);
  let makeStore;
  if (values.store === 'redis') {
    const { createRedisStore } = await import(`${root}/store-redis/dist/index.js`);
    makeStore = () =>
      createRedisStore({ client, keyPrefix: `${runPrefix}${randomBytes(4).toString('hex')}:` });
  } else {
    const { createMemoryStore } = await import(`${root}/store-memory/dist/index.js`);
    makeStore = () =>
      createMemoryStore({ maxEntries: 2 * calls + 10_000, maxBytes: (2 * calls + 10_000) * 4096 });
  }
  return { label, core, makeStore };
}

async function round(build) {
  const store = build.makeStore();
  const idem = build.core.createIdempotency({ store });
  const pool = Array.from({ length: 256 }, (_, i) => `replay-${i}`);
  for (const key of pool) await idem.execute({ key }, async () => result(key));
  const run = randomBytes(4).toString('hex');
  let seq = 0;
  let next = 0;
  const one = async (i) => {
    if (values.op === 'cycle') {
      const key = `c-${run}-${seq++}`;
      const { replayed } = await idem.execute({ key }, async () => result(key));
      if (replayed) throw new Error('replayed');
    } else {
      const key = pool[i % pool.length];
      const { replayed, value } = await idem.execute({ key }, async () => {
        throw new Error('ran');
      });
      if (!replayed || value.key !== key) throw new Error('not replayed');
    }
  };
  const runAll = async (n) => {
    next = 0;
    const worker = async () => {
      while (next < n) await one(next++);
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  };
  await runAll(Math.min(5_000, calls / 5));
  const cpu0 = process.cpuUsage();
  const server0 = serverCpu();
  await runAll(calls);
  const cpu = process.cpuUsage(cpu0);
  const server = serverCpu() - server0;
  await store.close?.();
  return { client: (cpu.user + cpu.system) / calls, server: server / calls };
}

const builds = [await load(values.before, 'before'), await load(values.after, 'after')];
const seen = { before: [], after: [] };
const seenServer = { before: [], after: [] };
for (let r = 0; r < Number(values.rounds); r++) {
  const order = r % 2 === 0 ? builds : [...builds].reverse();
  for (const build of order) {
    const us = await round(build);
    seen[build.label].push(us.client);
    seenServer[build.label].push(us.server);
  }
  const server = redisPid
    ? ` (redis-server: before ${seenServer.before.at(-1).toFixed(2)} µs, after ${seenServer.after.at(-1).toFixed(2)} µs)`
    : '';
  console.log(
    `round ${r + 1}: before ${seen.before.at(-1).toFixed(2)} µs, after ${seen.after.at(-1).toFixed(2)} µs${server}`,
  );
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const b = median(seen.before);
const a = median(seen.after);
console.log(
  `${values.store} ${values.op} c${concurrency}: before ${b.toFixed(2)} µs/call, after ${a.toFixed(2)} µs/call (${((a / b) * 100).toFixed(0)} %)`,
);
if (redisPid) {
  const sb = median(seenServer.before);
  const sa = median(seenServer.after);
  console.log(
    `redis-server: before ${sb.toFixed(2)} µs/call, after ${sa.toFixed(2)} µs/call (${((sa / sb) * 100).toFixed(0)} %)`,
  );
}
if (client) {
  // The records outlive the run (their retention): leave the Redis as it was.
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${runPrefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await client.unlink(...keys);
  } while (cursor !== '0');
  client.disconnect();
}
