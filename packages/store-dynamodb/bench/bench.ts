// Throughput of @idem/store-dynamodb against DynamoDB Local, next to the ceiling measured in
// the same run: the raw requests a cycle or a replay needs at least, without idem.
//
//   pnpm --filter @idem/store-dynamodb bench
//
// Starts DynamoDB Local like the tests do (or uses DYNAMODB_ENDPOINT). BENCH_OPS scales the
// number of operations per measurement (default 1). Every loop is bounded in count and time.
import { randomBytes } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import {
  DeleteTableCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { createIdempotency } from '@idem/core';
import { startDynamoDbLocal } from '../../../scripts/dynamodb-local.mjs';
import { createDynamoDbStore, recommendedDynamoDbClientConfig } from '../src/index.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const SCALE = Number(process.env.BENCH_OPS ?? 1) || 1;
const MAX_MS = 30_000;
const CONCURRENCY = [1, 32];
const ROUNDS = 3;

interface Measured {
  ops: number;
  perSecond: number;
  p50: number;
  p99: number;
  /** CPU time of this Node process per operation, in µs (the rest is DynamoDB Local's). */
  cpuMicros: number;
}

async function measure(
  total: number,
  concurrency: number,
  op: (i: number) => Promise<void>,
): Promise<Measured> {
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  const cpu = process.cpuUsage();
  const deadline = started + MAX_MS;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total && performance.now() < deadline) {
        const i = next++;
        const t0 = performance.now();
        await op(i);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  return {
    ops: latencies.length,
    perSecond: latencies.length / seconds,
    p50: at(0.5),
    p99: at(0.99),
    cpuMicros: (used.user + used.system) / Math.max(1, latencies.length),
  };
}

function median(runs: Measured[]): Measured {
  const sorted = [...runs].sort((a, b) => a.perSecond - b.perSecond);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function main(): Promise<void> {
  const loadAtStart = loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');
  // The JVM's optimising compiler stays on (the tests turn it off): steady-state figures.
  const local = await startDynamoDbLocal({ jvmFlags: [] });
  const client = new DynamoDBClient({
    endpoint: local.endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'idembench', secretAccessKey: 'idembench' },
    // The settings the README recommends: every call bounded.
    ...recommendedDynamoDbClientConfig(),
  });
  const tableName = `idem-bench-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  const store = createDynamoDbStore({ client, tableName });
  const rows: string[] = [];
  try {
    await store.ensureTable({ pollMs: 50 });
    const idem = createIdempotency<{ id: number; ok: boolean }>({ store });
    const payload = (id: number) => ({ id, ok: true });
    let executions = 0;

    // Raw requests of the same shape and size as idem's, without conditions or decoding.
    const rawPut = (key: string) =>
      client.send(
        new PutItemCommand({
          TableName: tableName,
          Item: {
            pk: { S: key },
            status: { S: 'in_progress' },
            fingerprint: { S: 'f'.repeat(43) },
            owner: { S: 'o'.repeat(22) },
            fence: { N: '1' },
            leaseUntil: { N: String(Date.now() + 30_000) },
            expiresAt: { N: String(Date.now() + 86_430_000) },
            ttl: { N: String(Math.ceil((Date.now() + 86_430_000) / 1000)) },
          },
        }),
      );
    const rawUpdate = (key: string, outcome: Uint8Array) =>
      client.send(
        new UpdateItemCommand({
          TableName: tableName,
          Key: { pk: { S: key } },
          UpdateExpression: 'SET #s = :c, #o = :o, #e = :e',
          ExpressionAttributeNames: { '#s': 'status', '#o': 'outcome', '#e': 'expiresAt' },
          ExpressionAttributeValues: {
            ':c': { S: 'completed' },
            ':o': { B: outcome },
            ':e': { N: String(Date.now() + 86_400_000) },
          },
        }),
      );
    // The request an idem replay makes: a conditional write that fails and returns the item.
    const rawFailedWrite = async (key: string) => {
      try {
        await client.send(
          new UpdateItemCommand({
            TableName: tableName,
            Key: { pk: { S: key } },
            UpdateExpression: 'SET #s = :s',
            ConditionExpression: 'attribute_not_exists(pk)',
            ExpressionAttributeNames: { '#s': 'status' },
            ExpressionAttributeValues: { ':s': { S: 'in_progress' } },
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          }),
        );
      } catch (error) {
        if ((error as { Item?: unknown }).Item) return;
        throw error;
      }
      throw new Error('the conditional write should have failed');
    };
    const rawGet = (key: string) =>
      client.send(
        new GetItemCommand({ TableName: tableName, Key: { pk: { S: key } }, ConsistentRead: true }),
      );
    const rawOutcome = new TextEncoder().encode(
      `IDM\u0001....${JSON.stringify({ kind: 'value', value: {} })}${JSON.stringify(payload(1))}`,
    );

    // Warm up the JVM, the connections and the code paths.
    const warm = `warm-${randomBytes(4).toString('hex')}`;
    await measure(300, 8, async (i) => {
      await rawPut(`${warm}-${i}`);
      await rawUpdate(`${warm}-${i}`, rawOutcome);
      await rawGet(`${warm}-${i}`);
      await idem.execute({ key: `w${i}`, scope: warm }, async () => payload(i));
      await idem.execute({ key: `w${i}`, scope: warm }, async () => payload(i));
    });

    for (const concurrency of CONCURRENCY) {
      // Rounds alternate idem and its ceiling so that drift (GC, a busy machine) hits both;
      // each figure is the median round.
      const perRound = Math.round(((concurrency === 1 ? 1_500 : 6_000) * SCALE) / ROUNDS);
      const got: Record<
        'cycles' | 'ceilingCycles' | 'replays' | 'ceilingReplays' | 'sameRequest',
        Measured[]
      > = {
        cycles: [],
        ceilingCycles: [],
        replays: [],
        ceilingReplays: [],
        sameRequest: [],
      };
      for (let round = 0; round < ROUNDS; round++) {
        const run = randomBytes(4).toString('hex');
        const ceilingCycles = await measure(perRound, concurrency, async (i) => {
          await rawPut(`raw-${run}-${i}`);
          await rawUpdate(`raw-${run}-${i}`, rawOutcome);
        });
        const cycles = await measure(perRound, concurrency, async (i) => {
          const result = await idem.execute({ key: `k${i}`, scope: run }, async () => {
            executions++;
            return payload(i);
          });
          if (result.replayed) throw new Error('a first execution was replayed');
        });
        const ceilingReplays = await measure(perRound, concurrency, async (i) => {
          const output = await rawGet(`raw-${run}-${i % ceilingCycles.ops}`);
          if (!output.Item) throw new Error('raw item missing');
        });
        const before = executions;
        const replays = await measure(perRound, concurrency, async (i) => {
          const result = await idem.execute({ key: `k${i % cycles.ops}`, scope: run }, async () => {
            executions++;
            return payload(i);
          });
          if (!result.replayed || result.value.id !== i % cycles.ops) {
            throw new Error('replay returned the wrong value');
          }
        });
        if (executions !== before) throw new Error('a replay executed the operation');
        const sameRequest = await measure(perRound, concurrency, (i) =>
          rawFailedWrite(`raw-${run}-${i % ceilingCycles.ops}`),
        );
        got.cycles.push(cycles);
        got.ceilingCycles.push(ceilingCycles);
        got.replays.push(replays);
        got.ceilingReplays.push(ceilingReplays);
        got.sameRequest.push(sameRequest);
      }
      const m = Object.fromEntries(Object.entries(got).map(([k, v]) => [k, median(v)])) as Record<
        keyof typeof got,
        Measured
      >;
      const row = (name: string, idemFigure: Measured, ceiling: Measured) =>
        [
          name,
          concurrency,
          idemFigure.perSecond.toFixed(0),
          ceiling.perSecond.toFixed(0),
          `${((100 * idemFigure.perSecond) / ceiling.perSecond).toFixed(0)} %`,
          `${idemFigure.p50.toFixed(1)} / ${idemFigure.p99.toFixed(1)}`,
          `${ceiling.p50.toFixed(1)} / ${ceiling.p99.toFixed(1)}`,
          `${idemFigure.cpuMicros.toFixed(0)} / ${ceiling.cpuMicros.toFixed(0)}`,
        ].join(' | ');
      rows.push(`| ${row('cycle (acquire + complete)', m.cycles, m.ceilingCycles)} |`);
      rows.push(`| ${row('replay (acquire finds outcome)', m.replays, m.ceilingReplays)} |`);
      rows.push(`| ${row('replay vs its own request, raw', m.replays, m.sameRequest)} |`);
      console.error(
        `concurrency ${concurrency}: done (${ROUNDS} rounds of ${perRound} operations each)`,
      );
    }
  } finally {
    try {
      if (!local.started) await client.send(new DeleteTableCommand({ TableName: tableName }));
    } finally {
      client.destroy();
      await local.stop();
    }
  }
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  console.log(
    `\nDynamoDB Local figures (not AWS): Node ${process.version}, ${cpus().length} x ${cpu}`,
  );
  console.log(
    `load average at start ${loadAtStart}, at end ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
  console.log(
    `endpoint ${local.started ? 'DynamoDB Local started by the bench (-inMemory)' : local.endpoint}\n`,
  );
  console.log(
    '| operation | concurrency | idem ops/s | ceiling ops/s | idem / ceiling | idem p50 / p99 ms | ceiling p50 / p99 ms | Node CPU µs/op idem / ceiling |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const row of rows) console.log(row);
  console.log(
    '\nceiling: raw PutItem + UpdateItem per cycle, one consistent GetItem per replay, same client and table;\n' +
      '"its own request": the raw conditional UpdateItem that fails with ALL_OLD, which is what an idem replay sends.',
  );
}

await main();
