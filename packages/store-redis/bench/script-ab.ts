/**
 * This build's scripts against an earlier build's, in one run, alternating round by round:
 * what a free key's acquisition, its completion and a replay cost Redis (`INFO commandstats`
 * µs per `EVALSHA`, and the redis-server process's CPU from `/proc/<pid>/stat` when Redis
 * runs on this machine). Calls go through each build's store, 256 at a time (corked into
 * one write; `AB_BATCH=1`: one after the other, a simple loop), on fresh keys.
 *
 *   BENCH_BASELINE=/tmp/base pnpm --filter @idem/store-redis exec tsx bench/script-ab.ts
 *
 * BENCH_BASELINE (required): a directory holding the earlier build (`<dir>/store-redis/index.js`,
 * a copy of its `dist/`). Env: REDIS_URL (default redis://127.0.0.1:6379; use a Redis of its
 * own: other clients' calls add to the figures), AB_CALLS per step and round (default 8000),
 * AB_ROUNDS (default 5), AB_CALLGRIND: the pid of a \`valgrind --tool=callgrind
 * --callgrind-out-file=<dir>/out.%p redis-server ...\` (then the figure is the instructions
 * redis-server executed per call, by \`callgrind_control -z\` / \`-d\`: exact and unmoved by
 * the machine's load, which on a shared machine hides a difference of a few percent in
 * the timings). Keys live under a random prefix, deleted at the end.
 */

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import * as current from '../src/index.js';
import { packDurations } from '../src/scripts.js';
import { callgrindInstructions } from './callgrind-count.js';
import { unlinkPrefix } from './unlink-prefix.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const CALLS = Number(process.env.AB_CALLS ?? 8_000);
const ROUNDS = Number(process.env.AB_ROUNDS ?? 5);
const BATCH = Number(process.env.AB_BATCH ?? 256);
const prefix = `idem-ab:${randomBytes(4).toString('hex')}:`;
const baselineDir = process.env.BENCH_BASELINE;
if (!baselineDir) throw new Error('BENCH_BASELINE: a directory with <dir>/store-redis/index.js');

const ticksPerSecond = 100;
function serverCpuUs(pid: number | undefined): number {
  if (!pid) return Number.NaN;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / ticksPerSecond;
  } catch {
    return Number.NaN;
  }
}

const callgrind = process.env.AB_CALLGRIND ? Number(process.env.AB_CALLGRIND) : undefined;

async function evalshaUsec(client: Redis): Promise<[number, number]> {
  const found = /cmdstat_evalsha:calls=(\d+),usec=(\d+)/.exec(await client.info('commandstats'));
  return found ? [Number(found[1]), Number(found[2])] : [0, 0];
}

/** Stripped-down scripts: what calling a script and each step inside it cost. */
const FLOOR: Record<string, string> = {
  'script: return 1': 'return 1',
  'script: GET': "return redis.call('GET', KEYS[1])",
  'script: GET + TIME':
    "local v = redis.call('GET', KEYS[1]) local t = redis.call('TIME') return {0, t[1], v}",
};

const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1]!;

async function main(): Promise<void> {
  const client = new Redis(url);
  const pidMatch = /process_id:(\d+)/.exec(await client.info('server'));
  const local = /^redis:\/\/(127\.0\.0\.1|localhost)/.test(url);
  const pid = local && pidMatch ? Number(pidMatch[1]) : undefined;
  const baseline = (await import(
    pathToFileURL(join(baselineDir!, 'store-redis/index.js')).href
  )) as typeof current;
  const builds = {
    baseline: baseline.createRedisStore({ client, keyPrefix: `${prefix}b:` }),
    current: current.createRedisStore({ client, keyPrefix: `${prefix}c:` }),
  };
  const lease = { leaseMs: 30_000, retentionMs: 86_400_000 };
  const outcome = new Uint8Array(582).fill(0x41);
  const owner = (i: number) => `owner-${i}`.padEnd(22, '0');
  const fingerprint = ''.padEnd(64, 'f');
  const figures = new Map<string, number[]>();
  const note = (name: string, value: number) =>
    figures.set(name, [...(figures.get(name) ?? []), value]);

  for (let round = 0; round < ROUNDS; round++) {
    const order =
      round % 2 === 0 ? (['baseline', 'current'] as const) : (['current', 'baseline'] as const);
    for (const build of order) {
      const store = builds[build];
      const keys = Array.from({ length: CALLS }, (_, i) => `r${round}-${i}`.padEnd(64, 'k'));
      const step = async (name: string, call: (key: string, i: number) => Promise<unknown>) => {
        if (callgrind) callgrindInstructions(callgrind);
        const [calls0, usec0] = await evalshaUsec(client);
        const cpu0 = serverCpuUs(pid);
        for (let start = 0; start < CALLS; start += BATCH)
          await Promise.all(keys.slice(start, start + BATCH).map((key, j) => call(key, start + j)));
        const cpu1 = serverCpuUs(pid);
        const [calls1, usec1] = await evalshaUsec(client);
        if (callgrind) {
          note(
            `${name} | ${build} | redis-server instructions`,
            callgrindInstructions(callgrind) / CALLS,
          );
          return;
        }
        note(`${name} | ${build} | evalsha µs`, (usec1 - usec0) / (calls1 - calls0));
        note(`${name} | ${build} | redis-server CPU µs`, (cpu1 - cpu0) / CALLS);
      };
      await step('acquire, free key', (key, i) =>
        store.acquire({ key, fingerprint, owner: owner(i), ...lease }),
      );
      await step('complete', (key, i) =>
        store.complete({ key, owner: owner(i), outcome, retentionMs: lease.retentionMs }),
      );
      await step('acquire, completed key (replay)', (key) =>
        store.acquire({ key, fingerprint, owner: 'another', ...lease }),
      );
    }
    if (callgrind) {
      // What a peer sends, on the same connection (pipelined by the same corking).
      const peer = (i: number) => `${prefix}p:r${round}-${i}`;
      const body = Buffer.from(outcome);
      const plain = async (name: string, call: (i: number) => Promise<unknown>) => {
        callgrindInstructions(callgrind);
        for (let start = 0; start < CALLS; start += BATCH)
          await Promise.all(Array.from({ length: BATCH }, (_, j) => call(start + j)));
        note(
          `${name} | plain | redis-server instructions`,
          callgrindInstructions(callgrind) / CALLS,
        );
      };
      await plain("SET NX PX (a peer's claim)", (i) =>
        client.set(peer(i), 'x', 'PX', 30_000, 'NX'),
      );
      await plain("SET PX (a peer's record)", (i) => client.set(peer(i), body, 'PX', 86_400_000));
      await plain("GET (a peer's replay)", (i) => client.getBuffer(peer(i)));
      // The floor of a script step: stripped-down scripts with the acquire script's keys and
      // arguments, on the completed keys of the current build.
      for (const [name, lua] of Object.entries(FLOOR)) {
        const sha = (await client.script('LOAD', lua)) as string;
        await plain(name, (i) =>
          client.evalsha(
            sha,
            2,
            `${prefix}c:{${`r${round}-${i}`.padEnd(64, 'k')}}`,
            `${prefix}c:{${`r${round}-${i}`.padEnd(64, 'k')}}:fence`,
            fingerprint,
            'another',
            packDurations(30_000, 86_400_000, 86_400_000),
          ),
        );
      }
    }
  }
  console.log(
    `\nRedis at ${url}: median of ${ROUNDS} alternating rounds of ${CALLS} calls, ${BATCH} in flight\n`,
  );
  console.log('| step | build | figure | median | rounds |\n| --- | --- | --- | ---: | --- |');
  for (const [name, values] of figures)
    console.log(
      `| ${name} | ${median(values).toFixed(2)} | ${values.map((v) => v.toFixed(1)).join(' ')} |`,
    );
  await unlinkPrefix(client, prefix);
  client.disconnect();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
