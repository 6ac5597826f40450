/**
 * One worker process of the fault test (`fault.test.ts` spawns several and kills them).
 * Executes every logical request of FAULT_KEYS (shuffled) through the transactional engine,
 * with retries and FAULT_CONCURRENCY at once. The operation inserts one business row on the
 * transaction; with FAULT_RATE > 0 the worker kills its own transaction's connection
 * (`pg_terminate_backend`) or itself (SIGKILL) at a random point between that write and the
 * answer to COMMIT. Prints one JSON line per final answer, and a summary line at the end.
 */
import pg from 'pg';
import {
  createPostgresIdempotency,
  createPostgresStore,
  recommendedPoolConfig,
} from '../src/index.js';

const env = (name: string) => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`fault-worker needs ${name}`);
  return value;
};
const keys: string[] = JSON.parse(env('FAULT_KEYS'));
const table = env('FAULT_TABLE');
const charges = env('FAULT_CHARGES');
const scope = env('FAULT_SCOPE');
const rate = Number(env('FAULT_RATE'));
const concurrency = Number(env('FAULT_CONCURRENCY'));
const deadline = Date.now() + Number(env('FAULT_DEADLINE_MS'));
const worker = env('FAULT_WORKER');

const pool = new pg.Pool({
  connectionString: env('DATABASE_URL'),
  ...recommendedPoolConfig(),
  application_name: env('FAULT_APPLICATION'),
  max: concurrency + 2,
});
pool.on('error', () => {});
const store = createPostgresStore({ pool, table });
const engine = createPostgresIdempotency<{ id: string }>({
  store,
  leaseMs: 1_000,
  heartbeatMs: 300,
  storeTimeoutMs: 3_000,
});

const counts: Record<string, number> = {};
const count = (what: string) => {
  counts[what] = (counts[what] ?? 0) + 1;
};
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const print = (line: object) => process.stdout.write(`${JSON.stringify(line)}\n`);

type Point = 'after_write' | 'before_complete' | 'before_commit' | 'commit_sent';
const POINTS: Point[] = ['after_write', 'before_complete', 'before_commit', 'commit_sent'];

/** At a random point, kill the transaction's connection or this process. */
async function maybeFault(tx: pg.PoolClient, point: Point): Promise<void> {
  if (!(Math.random() < rate / POINTS.length)) return;
  if (Math.random() < 0.25) {
    print({ event: 'self_kill', point, worker });
    process.kill(process.pid, 'SIGKILL');
    await sleep(10_000);
  }
  count(`terminate_${point}`);
  const pid = (tx as unknown as { processID: number }).processID;
  await pool.query('SELECT pg_terminate_backend($1)', [pid]).catch(() => count('terminate_failed'));
}

/** The fault points after the operation returned: the completion and COMMIT on `tx`. */
function watchCommit(tx: pg.PoolClient): void {
  const original = tx.query.bind(tx) as (...args: unknown[]) => Promise<unknown>;
  (tx as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = async (
    ...args: unknown[]
  ) => {
    const config = args[0] as { name?: string; text?: string } | string;
    const text = typeof config === 'string' ? config : config.text;
    const isComplete = typeof config === 'object' && config.name?.startsWith('idem_complete');
    // One transaction only: the connection goes back to the pool after it.
    if (text === 'COMMIT' || text === 'ROLLBACK')
      (tx as unknown as { query: unknown }).query = original;
    if (isComplete) await maybeFault(tx, 'before_complete');
    if (text === 'COMMIT') {
      await maybeFault(tx, 'before_commit');
      const sent = original(...args);
      // Observed later by the engine; never an unhandled rejection meanwhile.
      sent.catch(() => {});
      await maybeFault(tx, 'commit_sent');
      return sent;
    }
    return original(...args);
  };
}

async function run(key: string): Promise<void> {
  for (let attempt = 1; Date.now() < deadline; attempt++) {
    try {
      const result = await engine.execute({ key, scope }, async ({ tx, fence }) => {
        const { rows } = await tx.query(
          `INSERT INTO ${charges} (key, fence, worker) VALUES ($1, $2, $3) RETURNING id`,
          [key, fence, worker],
        );
        await maybeFault(tx, 'after_write');
        watchCommit(tx);
        await sleep(Math.random() * 15);
        return { id: String(rows[0].id) };
      });
      print({ key, id: result.value.id, replayed: result.replayed, attempt });
      return;
    } catch (error) {
      count((error as { code?: string }).code ?? (error as Error).message);
      await sleep(20 + Math.random() * 80);
    }
  }
  count('gave_up');
}

const queue = [...keys].sort(() => Math.random() - 0.5);
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    for (let key = queue.pop(); key !== undefined; key = queue.pop()) await run(key);
  }),
);
await engine.drain(5_000);
print({ event: 'done', worker, counts });
await pool.end();
