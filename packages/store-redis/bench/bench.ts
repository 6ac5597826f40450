/**
 * Throughput of @idem/store-redis through `execute()` against the ceiling of the same Redis in
 * the same process, and optionally against an earlier build of idem.
 *
 *   pnpm --filter @idem/store-redis bench
 *
 * Env: REDIS_URL (default redis://127.0.0.1:6379), BENCH_SECONDS per measurement (default 2),
 * BENCH_ROUNDS alternating rounds per figure, median taken (default 5), BENCH_PAYLOAD bytes of
 * the operation's JSON result (default 512), BENCH_CONCURRENCY (default "1,64"), BENCH_BASELINE: a
 * directory holding an earlier build (`<dir>/store-redis/index.js`, and `@idem/core` under
 * `<dir>/node_modules`), measured in the same rounds; BENCH_VARIANT: ioredis options as JSON
 * (e.g. `{"enableAutoPipelining":true}`): idem and raw are measured again with them (`idem*`,
 * `raw*`).
 *
 * - cycle: `idempotency.execute()` on a new key: acquire + complete.
 *   Ceiling: raw ioredis `SET key owner NX PX` then `SET key <outcome-sized value> PX`.
 * - replay: `idempotency.execute()` on a completed key: one acquire returning the outcome.
 *   Ceiling: one raw `GET` of a value of the same size.
 *
 * Every contender gets its own connection with the recommended client options; each round runs
 * every contender once, in an order that rotates from round to round, so that load drifting on
 * the machine hits all alike.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import * as core from '@idem/core';
import { Redis, type RedisOptions } from 'ioredis';
import * as current from '../src/index.js';
import { unlinkPrefix } from './unlink-prefix.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const seconds = Number(process.env.BENCH_SECONDS ?? 2);
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
const payloadBytes = Number(process.env.BENCH_PAYLOAD ?? 512);
const levels = (process.env.BENCH_CONCURRENCY ?? '1,64').split(',').map(Number);
const baselineDir = process.env.BENCH_BASELINE;
const variantsOf = process.env.BENCH_VARIANT;
const prefix = `idem-bench:${randomBytes(4).toString('hex')}:`;
/** The operation's result: an object whose JSON is `payloadBytes` long (as in benchmarks/). */
function resultFor(key: string): { key: string; data: string } {
  const bare = JSON.stringify({ key, data: '' }).length;
  return { key, data: 'x'.repeat(Math.max(0, payloadBytes - bare)) };
}
// What the store really writes for such a result: the encoded outcome (header + meta + JSON).
const sample = core.jsonSerializer.serialize(resultFor('k'.repeat(12)));
const outcomeSize = core.encodeOutcome({
  meta: { kind: 'value', value: sample.meta },
  body: sample.body,
}).length;
const rawValue = 'x'.repeat(outcomeSize);

type Op = (i: number) => Promise<unknown>;
interface Contender {
  name: string;
  /** Prepares the keys of concurrency level `tag`; returns the cycle and replay operations. */
  prepare(tag: string): Promise<{ cycle: (round: number) => Op; replay: Op }>;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** CPU time (user + system) of a local process, in µs; undefined when not readable. */
function processCpu(pid: number): number | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10_000; // clock ticks of 10 ms
  } catch {
    return undefined;
  }
}

/** One measurement: ops per second, and CPU µs per op of this process and of redis-server. */
interface Figure {
  ops: number;
  clientCpu: number;
  serverCpu: number;
}

let redisPid = 0;

/**
 * Runs `op(i)` on `concurrency` workers for `seconds`. Besides the rate, records the CPU time
 * each op cost this process and the Redis server (when it runs on this machine): on a machine
 * shared with other work the rate follows the load, the CPU cost per op much less.
 */
async function measure(concurrency: number, op: Op): Promise<Figure> {
  let next = 0;
  let done = 0;
  const warmUntil = performance.now() + 200;
  while (performance.now() < warmUntil) await op(next++);
  const cpu = process.cpuUsage();
  const server = processCpu(redisPid);
  const started = performance.now();
  const stopAt = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < stopAt) {
        await op(next++);
        done++;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  const serverAfter = processCpu(redisPid);
  return {
    ops: done / elapsed,
    clientCpu: (used.user + used.system) / done,
    serverCpu:
      server === undefined || serverAfter === undefined
        ? Number.NaN
        : (serverAfter - server) / done,
  };
}

const REPLAY_POOL = 256;

async function connect(extra: RedisOptions = {}): Promise<Redis> {
  // The options the README recommends: bounded calls, reconnects for the life of the process.
  const client = new Redis(url, {
    ...current.recommendedRedisOptions(),
    ...extra,
    lazyConnect: true,
  });
  await client.connect();
  return client;
}

/** idem through `execute()`, built from `store` and `idemCore` (this build or a baseline). */
function idem(
  name: string,
  client: Redis,
  idemCore: typeof core,
  createRedisStore: typeof current.createRedisStore,
): Contender {
  const store = createRedisStore({ client, keyPrefix: `${prefix}${name}:` });
  // The defaults, as a user gets them: JSON results, heartbeats, store timeouts.
  const idempotency = idemCore.createIdempotency<ReturnType<typeof resultFor>>({ store });
  return {
    name,
    async prepare(tag) {
      for (let i = 0; i < REPLAY_POOL; i++) {
        const key = `replay-${tag}-${i}`;
        await idempotency.execute({ key }, async () => resultFor(key));
      }
      return {
        cycle: (round) => async (i) => {
          const key = `cycle-${tag}-${round}-${i}`;
          const result = await idempotency.execute({ key }, async () => resultFor(key));
          if (result.replayed) throw new Error('expected a first execution');
        },
        replay: async (i) => {
          const key = `replay-${tag}-${i % REPLAY_POOL}`;
          const result = await idempotency.execute({ key }, async () => {
            throw new Error('a replay ran the operation');
          });
          if (!result.replayed || result.value.key !== key) throw new Error('expected a replay');
        },
      };
    },
  };
}

function raw(client: Redis, name = 'raw ioredis'): Contender {
  return {
    name,
    async prepare(tag) {
      for (let i = 0; i < REPLAY_POOL; i++)
        await client.set(`${prefix}raw-replay-${tag}-${i}`, rawValue, 'PX', 86_400_000);
      return {
        cycle: (round) => async (i) => {
          const key = `${prefix}raw-cycle-${tag}-${round}-${i}`;
          await client.set(key, 'owner-token-1234567890', 'PX', 30_000, 'NX');
          await client.set(key, rawValue, 'PX', 86_400_000);
        },
        replay: (i) => client.getBuffer(`${prefix}raw-replay-${tag}-${i % REPLAY_POOL}`),
      };
    },
  };
}

async function main(): Promise<void> {
  const clients: Redis[] = [];
  const contenders: Contender[] = [];
  const open = async (extra?: RedisOptions) => {
    const client = await connect(extra);
    clients.push(client);
    return client;
  };
  contenders.push(idem('idem', await open(), core, current.createRedisStore));
  if (baselineDir) {
    const load = (path: string) => import(pathToFileURL(join(baselineDir, path)).href);
    const baseCore = (await load('node_modules/@idem/core/dist/index.js')) as typeof core;
    const baseStore = (await load('store-redis/index.js')) as typeof current;
    contenders.push(idem('baseline', await open(), baseCore, baseStore.createRedisStore));
  }
  if (variantsOf) {
    // The same contenders again with this client option (e.g. enableAutoPipelining).
    const extra = JSON.parse(variantsOf) as RedisOptions;
    contenders.push(idem('idem*', await open(extra), core, current.createRedisStore));
    contenders.push(raw(await open(extra), 'raw*'));
  }
  contenders.push(raw(await open()));
  const info = await clients[0]!.info('server');
  const version = /redis_version:(\S+)/.exec(info)?.[1] ?? '?';
  redisPid = Number(/process_id:(\d+)/.exec(info)?.[1]);

  const rows: string[][] = [];
  for (const concurrency of levels) {
    const tag = `c${concurrency}`;
    const ops = await Promise.all(contenders.map((c) => c.prepare(tag)));
    const figures = contenders.map(() => ({ cycle: [] as Figure[], replay: [] as Figure[] }));
    for (let round = 0; round < rounds; round++) {
      for (let k = 0; k < contenders.length; k++) {
        const at = (k + round) % contenders.length;
        figures[at]!.cycle.push(await measure(concurrency, ops[at]!.cycle(round)));
        figures[at]!.replay.push(await measure(concurrency, ops[at]!.replay));
      }
    }
    const ceiling = figures[figures.length - 1]!;
    const of = (list: Figure[], field: keyof Figure) => median(list.map((f) => f[field]));
    for (const what of ['cycle', 'replay'] as const) {
      const ours = of(figures[0]![what], 'ops');
      const row = [String(concurrency), what];
      for (const f of figures) {
        const cost = `${of(f[what], 'clientCpu').toFixed(1)} + ${of(f[what], 'serverCpu').toFixed(1)} µs`;
        row.push(`${Math.round(of(f[what], 'ops')).toLocaleString('en-US')} (${cost})`);
      }
      if (baselineDir) row.push(`${(ours / of(figures[1]![what], 'ops')).toFixed(2)}x`);
      row.push(`${((ours / of(ceiling[what], 'ops')) * 100).toFixed(0)} %`);
      rows.push(row);
    }
  }

  console.log(
    `\n@idem/store-redis bench: Redis ${version} at ${url}, Node ${process.version}, ` +
      `${payloadBytes} B JSON result (${outcomeSize} B stored outcome), median of ${rounds} alternating ` +
      `rounds of ${seconds} s, load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} CPUs. ` +
      'In brackets: CPU time per op of this process + of redis-server (when local).\n',
  );
  const header = ['concurrency', 'operation', ...contenders.map((c) => `${c.name} ops/s`)];
  if (baselineDir) header.push('idem / baseline');
  header.push('idem / raw');
  for (const row of [header, header.map(() => '---'), ...rows])
    console.log(`| ${row.join(' | ')} |`);

  await unlinkPrefix(clients[0]!, prefix);
  for (const client of clients) client.disconnect();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
