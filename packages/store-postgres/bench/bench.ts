/**
 * idem on PostgreSQL against the raw `pg` ceiling, in one process, alternating rounds.
 *
 *   pnpm --filter @idem/store-postgres bench
 *   DATABASE_URL=postgres://... BENCH_ROUNDS=5 BENCH_MS=1000 pnpm --filter @idem/store-postgres bench
 *
 * Each round measures every contender once per concurrency, the order rotating from round
 * to round, so a load that comes and goes on the machine hits them alike; a figure is the
 * median of its rounds (ops/s, and this process's CPU µs per operation). Everything lives
 * in a schema of its own, dropped at the end.
 *
 * - cycle: a first execution. idem: `execute` (acquire + complete, 2 statements). raw: the
 *   least a record needs, `INSERT ... ON CONFLICT DO NOTHING` then `UPDATE ... SET outcome`.
 * - replay: a completed key. idem: `execute` (the acquire answers the record, 1 statement).
 *   raw: `SELECT outcome`.
 * - tx: a first execution that inserts one business row. idem: the transactional engine
 *   (acquire; then BEGIN, INSERT, complete, COMMIT on one connection). raw: BEGIN, INSERT
 *   the business row, INSERT the record with its outcome, COMMIT.
 */
import { randomBytes } from 'node:crypto';
import { createIdempotency } from '@idem/core';
import pg from 'pg';
import {
  createPostgresIdempotency,
  createPostgresStore,
  recommendedPoolConfig,
} from '../src/index.js';

const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const rounds = Number(process.env.BENCH_ROUNDS) || 5;
const measureMs = Number(process.env.BENCH_MS) || 1_000;
const concurrencies = (process.env.BENCH_CONCURRENCY ?? '1,16').split(',').map(Number);
const schema = `idem_bench_${randomBytes(4).toString('hex')}`;
const value = { data: 'x'.repeat(480) };
const outcome = Buffer.from(JSON.stringify(value));

const pool = new pg.Pool({ connectionString: url, ...recommendedPoolConfig(), max: 16 });
pool.on('error', () => {});
await pool.query(`CREATE SCHEMA ${schema}`);
await pool.query(
  `CREATE TABLE ${schema}.raw (key text COLLATE "C" PRIMARY KEY, owner text, outcome bytea)`,
);
await pool.query(
  `CREATE TABLE ${schema}.charges (id bigserial PRIMARY KEY, key text NOT NULL, fence bigint NOT NULL)`,
);
const store = createPostgresStore({ pool, table: `${schema}.idem_records` });
await store.ensureSchema();
const idem = createIdempotency<typeof value>({ store });
const tx = createPostgresIdempotency<typeof value>({ store });

let counter = 0;
const fresh = () => `k${++counter}-${randomBytes(4).toString('hex')}`;
const replayKeys = Array.from({ length: 64 }, (_, i) => `replay-${i}`);

type Op = (worker: number, i: number) => Promise<void>;
const contenders: Record<string, Record<string, Op>> = {
  cycle: {
    idem: async () => {
      const r = await idem.execute({ key: fresh(), scope: 'bench' }, async () => value);
      if (r.replayed) throw new Error('a cycle replayed');
    },
    raw: async () => {
      const key = fresh();
      const claimed = await pool.query(
        `INSERT INTO ${schema}.raw (key, owner) VALUES ($1, 'o') ON CONFLICT DO NOTHING`,
        [key],
      );
      if (claimed.rowCount !== 1) throw new Error('raw claim failed');
      await pool.query(`UPDATE ${schema}.raw SET outcome = $2 WHERE key = $1 AND owner = 'o'`, [
        key,
        outcome,
      ]);
    },
  },
  replay: {
    idem: async (_w, i) => {
      const r = await idem.execute(
        { key: replayKeys[i % replayKeys.length]!, scope: 'bench' },
        async () => {
          throw new Error('a replay ran');
        },
      );
      if (!r.replayed || r.value.data.length !== 480) throw new Error('bad replay');
    },
    raw: async (_w, i) => {
      const { rows } = await pool.query(`SELECT outcome FROM ${schema}.raw WHERE key = $1`, [
        replayKeys[i % replayKeys.length],
      ]);
      if (rows[0]?.outcome.length !== outcome.length) throw new Error('bad raw replay');
    },
  },
  tx: {
    idem: async () => {
      const key = fresh();
      await tx.execute({ key, scope: 'bench' }, async ({ tx: client, fence }) => {
        await client.query(`INSERT INTO ${schema}.charges (key, fence) VALUES ($1, $2)`, [
          key,
          fence,
        ]);
        return value;
      });
    },
    raw: async () => {
      const key = fresh();
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query(`INSERT INTO ${schema}.charges (key, fence) VALUES ($1, 1)`, [key]);
        await client.query(`INSERT INTO ${schema}.raw (key, owner, outcome) VALUES ($1, 'o', $2)`, [
          key,
          outcome,
        ]);
        await client.query('COMMIT');
      } finally {
        client.release();
      }
    },
  },
};

// Replay keys exist for both contenders.
for (const key of replayKeys) {
  await idem.execute({ key, scope: 'bench' }, async () => value);
  await pool.query(`INSERT INTO ${schema}.raw (key, owner, outcome) VALUES ($1, 'o', $2)`, [
    key,
    outcome,
  ]);
}

async function measure(op: Op, concurrency: number): Promise<{ rate: number; cpu: number }> {
  const until = performance.now() + measureMs;
  let done = 0;
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, worker) => {
      while (performance.now() < until) await op(worker, done++);
    }),
  );
  const elapsed = performance.now() - started;
  const cpu = process.cpuUsage(cpuBefore);
  return { rate: (done / elapsed) * 1_000, cpu: (cpu.user + cpu.system) / done };
}

const results = new Map<string, Array<{ rate: number; cpu: number }>>();
const names = ['idem', 'raw'];
for (const pair of Object.values(contenders)) {
  for (const concurrency of concurrencies) await measure(pair.idem!, concurrency); // warm-up
  for (const concurrency of concurrencies) await measure(pair.raw!, concurrency);
}
for (let round = 0; round < rounds; round++) {
  const order = round % 2 === 0 ? names : [...names].reverse();
  for (const [operation, pair] of Object.entries(contenders)) {
    for (const concurrency of concurrencies) {
      for (const name of order) {
        const id = `${operation}|${concurrency}|${name}`;
        if (!results.has(id)) results.set(id, []);
        results.get(id)!.push(await measure(pair[name]!, concurrency));
      }
    }
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const { rows } = await pool.query('SELECT version()');
console.log(`PostgreSQL: ${rows[0].version.split(',')[0]}; Node ${process.version}`);
console.log(`${rounds} alternating rounds of ${measureMs} ms; median ops/s (client CPU µs/op)\n`);
console.log('| operation | concurrency | idem | raw pg | idem / raw |');
console.log('| --- | --- | --- | --- | --- |');
for (const operation of Object.keys(contenders)) {
  for (const concurrency of concurrencies) {
    const idemRuns = results.get(`${operation}|${concurrency}|idem`)!;
    const rawRuns = results.get(`${operation}|${concurrency}|raw`)!;
    const i = {
      rate: median(idemRuns.map((r) => r.rate)),
      cpu: median(idemRuns.map((r) => r.cpu)),
    };
    const r = { rate: median(rawRuns.map((x) => x.rate)), cpu: median(rawRuns.map((x) => x.cpu)) };
    console.log(
      `| ${operation} | ${concurrency} | ${fmt(i.rate)} (${fmt(i.cpu)}) | ${fmt(r.rate)} (${fmt(r.cpu)}) | ${Math.round((i.rate / r.rate) * 100)} % |`,
    );
  }
}
await pool.query(`DROP SCHEMA ${schema} CASCADE`);
await pool.end();
