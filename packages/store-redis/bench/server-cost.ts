/**
 * What each store step costs Redis itself, independent of the client's speed and of the
 * machine's load: the growth of `INFO commandstats` (microseconds spent in commands, scripts
 * with the commands they call included) and, when Redis runs on this machine, of the
 * redis-server process's CPU time (`/proc/<pid>/stat`: command time plus socket I/O), per
 * step.
 *
 *   pnpm --filter @idem/store-redis exec tsx bench/server-cost.ts
 *
 * Env: REDIS_URL (default redis://127.0.0.1:6379), COST_STEPS per step kind (default 20000),
 * BENCH_PAYLOAD bytes of the operation's result (default 512), COST_FENCE_MEMORY_MS (the
 * store's fenceMemoryMs, default its default), BENCH_BASELINE: a directory
 * holding an earlier build (`<dir>/store-redis/index.js`), measured instead of this one. Other
 * clients of the same Redis add to the figures: point it at a Redis of its own for clean ones.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { encodeOutcome } from '@idem/core';
import { Redis } from 'ioredis';
import * as current from '../src/index.js';
import { unlinkPrefix } from './unlink-prefix.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const steps = Number(process.env.COST_STEPS ?? 20_000);
const payloadBytes = Number(process.env.BENCH_PAYLOAD ?? 512);
const concurrency = 16;
const prefix = `idem-cost:${randomBytes(4).toString('hex')}:`;
const outcome = encodeOutcome({
  meta: { kind: 'value', value: { encoding: 'bytes' } },
  body: new Uint8Array(randomBytes(payloadBytes)),
});
const lease = { leaseMs: 30_000, retentionMs: 86_400_000 };

/** Total µs Redis spent in commands so far, by command name. */
async function commandUsec(client: Redis): Promise<Map<string, number>> {
  const info = await client.info('commandstats');
  const out = new Map<string, number>();
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=\d+,usec=(\d+)/gm)) {
    out.set(match[1]!, Number(match[2]));
  }
  return out;
}

/** CPU time (user + system) of the local redis-server process, in µs; undefined if not local. */
function processUsec(pid: number): number | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100 a second).
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  const baselineDir = process.env.BENCH_BASELINE;
  const { createRedisStore } = baselineDir
    ? ((await import(
        pathToFileURL(join(baselineDir, 'store-redis/index.js')).href
      )) as typeof current)
    : current;
  const options = { ...current.recommendedRedisOptions(), lazyConnect: true };
  const client = new Redis(url, options);
  await client.connect();
  const server = await client.info('server');
  const pid = Number(/process_id:(\d+)/.exec(server)?.[1]);
  const version = /redis_version:(\S+)/.exec(server)?.[1] ?? '?';
  const fenceMemory = process.env.COST_FENCE_MEMORY_MS;
  const store = createRedisStore({
    client,
    keyPrefix: prefix,
    ...(fenceMemory === undefined ? {} : { fenceMemoryMs: Number(fenceMemory) }),
  });
  const owner = (i: number) => `owner-${i}`;

  /** Runs `step(i)` for i in [0, steps) on `concurrency` workers; returns µs a step. */
  async function cost(name: string, step: (i: number) => Promise<unknown>): Promise<string[]> {
    const before = await commandUsec(client);
    const cpuBefore = processUsec(pid);
    let next = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < steps) await step(next++);
      }),
    );
    const cpuAfter = processUsec(pid);
    const after = await commandUsec(client);
    let total = 0;
    const parts: string[] = [];
    for (const [command, usec] of after) {
      const spent = usec - (before.get(command) ?? 0);
      if (command === 'info') continue;
      total += spent;
      if (spent / steps >= 0.05) parts.push(`${command} ${(spent / steps).toFixed(2)}`);
    }
    const cpu =
      cpuBefore === undefined || cpuAfter === undefined
        ? 'n/a'
        : ((cpuAfter - cpuBefore) / steps).toFixed(1);
    return [name, (total / steps).toFixed(2), cpu, parts.join(', ')];
  }

  const rows: string[][] = [];
  const key = (kind: string, i: number) => `${kind}-${i}`;
  rows.push(
    await cost('acquire (free key)', (i) =>
      store.acquire({ key: key('a', i), fingerprint: 'fp', owner: owner(i), ...lease }),
    ),
  );
  rows.push(
    await cost('extend', (i) => store.extend({ key: key('a', i), owner: owner(i), ...lease })),
  );
  rows.push(
    await cost('complete', (i) =>
      store.complete({
        key: key('a', i),
        owner: owner(i),
        outcome,
        retentionMs: lease.retentionMs,
      }),
    ),
  );
  rows.push(
    await cost('acquire (completed: replay)', (i) =>
      store.acquire({ key: key('a', i), fingerprint: 'fp', owner: 'other', ...lease }),
    ),
  );
  for (let i = 0; i < steps; i++) {
    // Fresh in-progress records for the conflict and release rows.
    await store.acquire({ key: key('b', i), fingerprint: 'fp', owner: owner(i), ...lease });
  }
  rows.push(
    await cost('acquire (in progress: conflict)', (i) =>
      store.acquire({ key: key('b', i), fingerprint: 'fp', owner: 'other', ...lease }),
    ),
  );
  rows.push(
    await cost('release', (i) =>
      store.release({ key: key('b', i), owner: owner(i), retentionMs: lease.retentionMs }),
    ),
  );
  rows.push(
    await cost('acquire (released)', (i) =>
      store.acquire({ key: key('b', i), fingerprint: 'fp', owner: `n-${i}`, ...lease }),
    ),
  );

  // The same work with plain commands, for scale: a cycle of two SETs and a replay GET.
  const value = Buffer.from(outcome);
  rows.push(
    await cost('raw SET NX PX + SET PX (cycle)', async (i) => {
      await client.set(`${prefix}raw-${i}`, owner(i), 'PX', lease.leaseMs, 'NX');
      await client.set(`${prefix}raw-${i}`, value, 'PX', lease.retentionMs);
    }),
  );
  rows.push(await cost('raw GET (replay)', (i) => client.getBuffer(`${prefix}raw-${i}`)));

  console.log(
    `\nRedis ${version} at ${url} (pid ${pid}), ${steps} steps each, ${outcome.length} B outcome\n`,
  );
  const header = [
    'step',
    'command µs / step',
    'redis-server CPU µs / step',
    'commands (µs / step)',
  ];
  for (const row of [header, header.map(() => '---'), ...rows])
    console.log(`| ${row.join(' | ')} |`);

  await unlinkPrefix(client, prefix);
  client.disconnect();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
