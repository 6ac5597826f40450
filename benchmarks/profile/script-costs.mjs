/**
 * What each of the Redis store's scripts costs Redis itself, from `INFO commandstats` (Redis's
 * own accounting, not the client's), beside the fixed cost of any script call with the same
 * arguments and what two plain commands cost: the floor of a cycle through Lua.
 *
 *   node profile/script-costs.mjs [calls=30000] [concurrency=64]
 *
 * Phases, each after `CONFIG RESETSTAT`: the store's acquire of free keys, its complete of
 * them (a 560-byte outcome), its acquire of the completed keys (a replay); then scripts that
 * do only part of that work (nothing; `TIME`; `GET` and `SET`), and the peer's cycle (`SET NX
 * PX`, then `SET PX`); on a server that has `SET ... IFEQ` (Valkey 8.1, Redis 8.4), also a
 * completion without Lua: one `SET` of a completed record conditional on the in-progress
 * bytes (a 110-byte record first written untimed). Prints µs of Redis CPU a call (`usec_per_call`, nested commands
 * included) and the nested commands' share. Uses its own key prefix on REDIS_URL and deletes
 * it (SCAN + UNLINK) at the end; bounded by `calls` per phase.
 */
import { createRedisStore, recommendedRedisOptions } from '@idem/store-redis';
import { Redis } from 'ioredis';

const [callsText = '30000', concurrencyText = '64'] = process.argv.slice(2);
const calls = Number(callsText);
const concurrency = Number(concurrencyText);
if (!(Number.isInteger(calls) && calls > 0 && calls <= 1_000_000))
  throw new Error('calls must be an integer from 1 to 1,000,000');
const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const client = new Redis(url, recommendedRedisOptions());
const admin = new Redis(url);
const keyPrefix = `idem-script-costs:${process.pid}:`;
const store = createRedisStore({ client, keyPrefix });
const outcome = new Uint8Array(560).fill(0x78);
const big = 'x'.repeat(560);

async function stats() {
  const text = await admin.info('commandstats');
  const out = new Map();
  for (const match of text.matchAll(/cmdstat_([\w|]+):calls=(\d+),usec=(\d+)/g))
    out.set(match[1], { calls: Number(match[2]), usec: Number(match[3]) });
  return out;
}

async function phase(label, one, setup) {
  if (setup) await Promise.all(Array.from({ length: calls }, (_, i) => setup(i)));
  await admin.config('RESETSTAT');
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < calls) await one(next++);
    }),
  );
  const all = await stats();
  all.delete('config|resetstat');
  const top = all.get('evalsha') ?? all.get('set') ?? all.get('setrange');
  const nested = [...all]
    .filter(([name]) => name !== 'evalsha')
    .map(
      ([name, { calls: n, usec }]) =>
        `${name} ${(n / top.calls).toFixed(1)}x ${(usec / n).toFixed(2)}`,
    )
    .join(', ');
  const perCall = all.has('evalsha')
    ? `${(top.usec / top.calls).toFixed(2)} µs a script call`
    : `${([...all.values()].reduce((s, v) => s + v.usec, 0) / calls).toFixed(2)} µs a call of the phase`;
  console.log(`${label.padEnd(34)} ${perCall}  (nested µs a command: ${nested || 'none'})`);
}

const scriptOf = async (body) => {
  const sha = await admin.script('LOAD', body);
  return (i) =>
    client.evalsha(
      sha,
      2,
      `${keyPrefix}{s${i}}`,
      `${keyPrefix}{s${i}}:f`,
      'owner',
      'x'.repeat(24),
      big,
      '0',
    );
};

// `SET ... IFEQ` (Valkey 8.1, Redis 8.4): a syntax error on older servers.
const ifeq = await admin.call('SET', `${keyPrefix}probe`, 'x', 'IFEQ', 'y').then(
  () => true,
  () => false,
);

try {
  for (let round = 1; round <= 2; round++) {
    console.log(`round ${round}, ${calls} calls a phase, ${concurrency} at once`);
    const key = (i) => `r${round}-${i}`;
    await phase('store acquire, free key', async (i) => {
      const answer = await store.acquire({
        key: key(i),
        fingerprint: 'fp',
        owner: `o${i}`,
        leaseMs: 30_000,
        retentionMs: 86_400_000,
      });
      if (answer.kind !== 'acquired') throw new Error(`${key(i)} not acquired`);
    });
    await phase('store complete', async (i) => {
      await store.complete({
        key: key(i),
        owner: `o${i}`,
        fence: 1,
        outcome,
        retentionMs: 86_400_000,
      });
    });
    await phase('store acquire, completed key', async (i) => {
      const answer = await store.acquire({
        key: key(i),
        fingerprint: 'fp',
        owner: `p${i}`,
        leaseMs: 30_000,
        retentionMs: 86_400_000,
      });
      if (answer.kind !== 'found') throw new Error(`${key(i)} not found`);
    });
    await phase('script: return 1', await scriptOf('return 1'));
    await phase('script: TIME', await scriptOf(`local t = redis.call('TIME') return 1`));
    await phase(
      'script: GET, SET',
      await scriptOf(
        `local v = redis.call('GET', KEYS[1]) redis.call('SET', KEYS[1], ARGV[3]) return 1`,
      ),
    );
    if (ifeq) {
      const inProgress = 'p'.repeat(110);
      const ifeqKey = (i) => `${keyPrefix}ifeq:${round}:${i}`;
      await phase(
        'SET IFEQ completion (no Lua)',
        async (i) => {
          const done = await client.set(ifeqKey(i), big, 'IFEQ', inProgress, 'PX', 86_400_000);
          if (done !== 'OK') throw new Error(`${ifeqKey(i)} not completed`);
        },
        (i) => admin.set(ifeqKey(i), inProgress, 'PX', 30_000),
      );
    }
    await phase('peer cycle: SET NX PX, SET PX', async (i) => {
      const k = `${keyPrefix}peer:${round}:${i}`;
      await client.set(k, 'owner-token', 'PX', 30_000, 'NX');
      await client.set(k, big, 'PX', 86_400_000);
    });
  }
} finally {
  let cursor = '0';
  do {
    const [nextCursor, keys] = await admin.scan(cursor, 'MATCH', `${keyPrefix}*`, 'COUNT', 1000);
    cursor = nextCursor;
    if (keys.length > 0) await admin.unlink(...keys);
  } while (cursor !== '0');
  client.disconnect();
  admin.disconnect();
}
