/**
 * What one cycle and one replay cost Redis itself: this store's scripts against the plain
 * commands a peer sends for the same step, and against stripped-down scripts that show where
 * a script's time goes. Pipelined 250 at a time on fresh keys (so socket I/O is spread thin);
 * µs of `INFO commandstats` per call, median of the rounds.
 *
 *   pnpm --filter @idem/store-redis exec tsx bench/script-floor.ts
 *
 * Env: REDIS_URL (default redis://127.0.0.1:6379; use a Redis of its own: other clients'
 * calls add to the figures), FLOOR_CALLS per figure and round (default 10000), FLOOR_ROUNDS
 * (default 3). Keys live under a random prefix, deleted at the end.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { createRedisStore } from '../src/index.js';
import { packDurations } from '../src/scripts.js';
import { unlinkPrefix } from './unlink-prefix.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const CALLS = Number(process.env.FLOOR_CALLS ?? 10_000);
const ROUNDS = Number(process.env.FLOOR_ROUNDS ?? 3);
const BATCH = 250;
const prefix = `idem-floor:${randomBytes(4).toString('hex')}:`;

/** Stripped-down scripts, called with the acquire script's keys and arguments. */
const SHAPES: Record<string, string> = {
  'script: return 1': 'return 1',
  'script: GET': "return redis.call('GET', KEYS[1])",
  'script: GET + TIME':
    "local v = redis.call('GET', KEYS[1]) local t = redis.call('TIME') return {0, t[1], v}",
  'script: GET + TIME + SET + PEXPIREAT': `local v = redis.call('GET', KEYS[1]) local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('SET', KEYS[1], ARGV[2] .. ARGV[1])
redis.call('PEXPIREAT', KEYS[1], string.format('%d', now + 86430000))
return {1, 1, now, 0}`,
};

async function usecPerCall(client: Redis, command: string, run: () => Promise<void>) {
  const read = async () => {
    const found = new RegExp(`cmdstat_${command}:calls=(\\d+),usec=(\\d+)`).exec(
      await client.info('commandstats'),
    );
    return found ? [Number(found[1]), Number(found[2])] : [0, 0];
  };
  const [calls0, usec0] = await read();
  await run();
  const [calls1, usec1] = await read();
  return (usec1! - usec0!) / (calls1! - calls0!);
}

/** Runs `send` for CALLS fresh indexes, BATCH at a time in one pipeline. */
async function pipelined(
  client: Redis,
  send: (p: ReturnType<Redis['pipeline']>, i: number) => void,
) {
  for (let start = 0; start < CALLS; start += BATCH) {
    const pipeline = client.pipeline();
    for (let i = start; i < start + BATCH; i++) send(pipeline, i);
    const results = await pipeline.exec();
    for (const [error] of results ?? []) if (error) throw error;
  }
}

async function main(): Promise<void> {
  const client = new Redis(url);
  const store = createRedisStore({ client, keyPrefix: prefix });
  const lease = { leaseMs: 30_000, retentionMs: 86_400_000 };
  const outcome = new Uint8Array(582).fill(0x41);
  const owner = (i: number) => `owner-${i}`.padEnd(36, '0');
  const shas: Record<string, string> = {};
  for (const [name, lua] of Object.entries(SHAPES))
    shas[name] = (await client.script('LOAD', lua)) as string;
  const figures: Record<string, number[]> = {};
  const note = (name: string, value: number) => {
    figures[name] = [...(figures[name] ?? []), value];
  };
  for (let round = 0; round < ROUNDS; round++) {
    const keys = Array.from({ length: CALLS }, (_, i) => `r${round}-${i}`.padEnd(64, 'k'));
    // This store, through its own calls: a free key, its completion, a replay.
    const batches = async (step: (key: string, i: number) => Promise<unknown>) => {
      for (let start = 0; start < CALLS; start += BATCH)
        await Promise.all(keys.slice(start, start + BATCH).map((key, j) => step(key, start + j)));
    };
    note(
      'idem acquire, free key',
      await usecPerCall(client, 'evalsha', () =>
        batches((key, i) =>
          store.acquire({ key, fingerprint: '', owner: owner(i), ...lease }),
        ).then(() => {}),
      ),
    );
    note(
      'idem complete',
      await usecPerCall(client, 'evalsha', () =>
        batches((key, i) =>
          store.complete({ key, owner: owner(i), outcome, retentionMs: lease.retentionMs }),
        ).then(() => {}),
      ),
    );
    note(
      'idem acquire, completed key (replay)',
      await usecPerCall(client, 'evalsha', () =>
        batches((key) => store.acquire({ key, fingerprint: '', owner: 'another', ...lease })).then(
          () => {},
        ),
      ),
    );
    // What a peer sends: SET NX + SET a cycle, SET NX + GET a replay.
    const peerKey = (i: number) => `${prefix}peer:r${round}-${i}`;
    note(
      'plain SET NX PX (claim)',
      await usecPerCall(client, 'set', () =>
        pipelined(client, (p, i) => p.set(peerKey(i), 'in-progress', 'PX', 30_000, 'NX')),
      ),
    );
    note(
      'plain SET PX (record the outcome)',
      await usecPerCall(client, 'set', () =>
        pipelined(client, (p, i) => p.set(peerKey(i), Buffer.from(outcome), 'PX', 86_400_000)),
      ),
    );
    note(
      'plain GET (replay)',
      await usecPerCall(client, 'get', () => pipelined(client, (p, i) => p.getBuffer(peerKey(i)))),
    );
    // Stripped-down scripts on fresh keys, with the acquire script's arguments.
    for (const name of Object.keys(SHAPES)) {
      note(
        name,
        await usecPerCall(client, 'evalsha', () =>
          pipelined(client, (p, i) =>
            p.evalsha(
              shas[name]!,
              2,
              `${prefix}{${name.length}-r${round}-${i}}`,
              `${prefix}{${name.length}-r${round}-${i}}:fence`,
              ''.padEnd(64, 'f'),
              owner(i),
              packDurations(30_000, 86_400_000, 86_400_000),
            ),
          ),
        ),
      );
    }
  }
  console.log(
    `\nRedis at ${url}: µs per call (INFO commandstats), median of ${ROUNDS} rounds of ${CALLS}\n`,
  );
  console.log('| call | µs |\n| --- | ---: |');
  for (const [name, values] of Object.entries(figures)) {
    const median = [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
    console.log(`| ${name} | ${median.toFixed(2)} |`);
  }
  await unlinkPrefix(client, prefix);
  client.disconnect();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
