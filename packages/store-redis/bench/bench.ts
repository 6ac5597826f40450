/**
 * Throughput of @idem/store-redis against the ceiling of the same Redis in the same process.
 *
 *   pnpm --filter @idem/store-redis bench
 *
 * Env: REDIS_URL (default redis://127.0.0.1:6379), BENCH_SECONDS per measurement (default 2),
 * BENCH_ROUNDS alternating rounds per figure, median taken (default 5), BENCH_PAYLOAD bytes of
 * the operation's result (default 1024).
 *
 * - cycle: `idempotency.execute()` on a new key: acquire script + complete script.
 *   Ceiling: raw ioredis `SET key owner NX PX` then `SET key <outcome-sized value> PX`.
 * - replay: `idempotency.execute()` on a completed key: one acquire script returning the outcome.
 *   Ceiling: one raw `GET` of a value of the same size.
 */
import { randomBytes } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import { bytesSerializer, createIdempotency, encodeOutcome } from '@idem/core';
import { Redis } from 'ioredis';
import { createRedisStore, recommendedRedisOptions } from '../src/index.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const seconds = Number(process.env.BENCH_SECONDS ?? 2);
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
const payloadBytes = Number(process.env.BENCH_PAYLOAD ?? 1024);
const prefix = `idem-bench:${randomBytes(4).toString('hex')}:`;
const payload = new Uint8Array(randomBytes(payloadBytes));
// What the store really writes for this payload: the encoded outcome (header + meta + body).
const outcomeSize = encodeOutcome({
  meta: { kind: 'value', value: { encoding: 'bytes' } },
  body: payload,
}).length;
const storedOutcome = encodeOutcome({
  meta: { kind: 'value', value: { encoding: 'bytes' } },
  body: payload,
});
const rawValue = randomBytes(outcomeSize);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** Runs `op(i)` on `concurrency` workers for `seconds`; returns completed ops per second. */
async function measure(concurrency: number, op: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  let done = 0;
  const warmUntil = performance.now() + 300;
  while (performance.now() < warmUntil) await op(next++);
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
  return done / ((performance.now() - started) / 1000);
}

async function main(): Promise<void> {
  // The options the README recommends: bounded calls, reconnects for the life of the process.
  const options = { ...recommendedRedisOptions(), lazyConnect: true };
  const client = new Redis(url, options);
  const raw = new Redis(url, options);
  await Promise.all([client.connect(), raw.connect()]);
  const info = await client.info('server');
  const version = /redis_version:(\S+)/.exec(info)?.[1] ?? '?';

  const store = createRedisStore({ client, keyPrefix: prefix });
  const idem = createIdempotency<Uint8Array>({ store, serializer: bytesSerializer });
  const operation = async () => payload;
  const run = randomBytes(4).toString('hex');

  const rows: string[][] = [];
  for (const concurrency of [1, 64]) {
    const tag = `${run}-c${concurrency}`;
    // Replays read a pool of completed keys round-robin.
    const pool = 256;
    for (let i = 0; i < pool; i++) {
      await idem.execute({ key: `replay-${tag}-${i}` }, operation);
      await raw.set(`${prefix}raw-replay-${tag}-${i}`, rawValue, 'PX', 86_400_000);
    }
    let round = 0;
    const cycle = () =>
      measure(concurrency, (i) => idem.execute({ key: `cycle-${tag}-${round}-${i}` }, operation));
    const rawCycle = () =>
      measure(concurrency, async (i) => {
        const key = `${prefix}raw-cycle-${tag}-${round}-${i}`;
        await raw.set(key, 'owner-token-1234567890', 'PX', 30_000, 'NX');
        await raw.set(key, rawValue, 'PX', 86_400_000);
      });
    const replay = () =>
      measure(concurrency, async (i) => {
        const result = await idem.execute({ key: `replay-${tag}-${i % pool}` }, operation);
        if (!result.replayed) throw new Error('expected a replay');
      });
    const rawReplay = () =>
      measure(concurrency, (i) => raw.getBuffer(`${prefix}raw-replay-${tag}-${i % pool}`));

    // The store alone, without the core executor around it (key derivation, owner token,
    // timeouts, outcome codec): shows where the time goes.
    const storeCycle = () =>
      measure(concurrency, async (i) => {
        const key = `store-cycle-${tag}-${round}-${i}`;
        const owner = `owner-${i}`;
        await store.acquire({
          key,
          fingerprint: '',
          owner,
          leaseMs: 30_000,
          retentionMs: 86_400_000,
        });
        await store.complete({ key, owner, outcome: storedOutcome, retentionMs: 86_400_000 });
      });
    const storeReplay = () =>
      measure(concurrency, (i) =>
        store.acquire({
          key: `store-replay-${tag}-${i % pool}`,
          fingerprint: '',
          owner: 'reader',
          leaseMs: 30_000,
          retentionMs: 86_400_000,
        }),
      );
    for (let i = 0; i < pool; i++) {
      const key = `store-replay-${tag}-${i}`;
      await store.acquire({
        key,
        fingerprint: '',
        owner: 'w',
        leaseMs: 30_000,
        retentionMs: 86_400_000,
      });
      await store.complete({ key, owner: 'w', outcome: storedOutcome, retentionMs: 86_400_000 });
    }

    // Rounds alternate idem and raw so that load drifting on the machine hits both alike;
    // each figure is the median of its rounds.
    const figures = {
      cycle: [[], []] as number[][],
      replay: [[], []] as number[][],
      storeCycle: [[], []] as number[][],
      storeReplay: [[], []] as number[][],
    };
    for (round = 0; round < rounds; round++) {
      figures.cycle[0]!.push(await cycle());
      figures.storeCycle[0]!.push(await storeCycle());
      const rawCycles = await rawCycle();
      figures.cycle[1]!.push(rawCycles);
      figures.storeCycle[1]!.push(rawCycles);
      figures.replay[0]!.push(await replay());
      figures.storeReplay[0]!.push(await storeReplay());
      const rawReplays = await rawReplay();
      figures.replay[1]!.push(rawReplays);
      figures.storeReplay[1]!.push(rawReplays);
    }
    for (const [what, [ours, ceiling]] of [
      ['cycle: execute() (acquire + complete)', figures.cycle],
      ['cycle: store.acquire + store.complete only', figures.storeCycle],
      ['replay: execute()', figures.replay],
      ['replay: store.acquire only', figures.storeReplay],
    ] as const) {
      const a = median(ours!);
      const b = median(ceiling!);
      rows.push([
        String(concurrency),
        what,
        Math.round(a).toLocaleString('en-US'),
        Math.round(b).toLocaleString('en-US'),
        `${((a / b) * 100).toFixed(0)} %`,
      ]);
    }
  }

  console.log(
    `\n@idem/store-redis bench: Redis ${version} at ${url}, Node ${process.version}, ` +
      `${payloadBytes} B payload (${outcomeSize} B stored outcome), median of ${rounds} alternating ` +
      `rounds of ${seconds} s, load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} CPUs\n`,
  );
  const header = ['concurrency', 'operation', 'idem ops/s', 'raw ioredis ops/s', 'ratio'];
  const table = [header, header.map(() => '---'), ...rows];
  for (const row of table) console.log(`| ${row.join(' | ')} |`);

  let cursor = '0';
  do {
    const [nextCursor, keys] = await raw.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = nextCursor;
    if (keys.length > 0) await raw.unlink(...keys);
  } while (cursor !== '0');
  client.disconnect();
  raw.disconnect();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
