import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { terminateEvery } from './hammer.js';
import { startLoadProbe } from './load-probe.js';
import { DATABASE_URL, randomName } from './pg-env.js';

/** pg's overloaded methods, called through with whatever they were given. */
type Loose = (...args: unknown[]) => Promise<void>;
/**
 * pgrev24 through the engine: the owners hold every connection of the pool (max = owners),
 * so the renewals have no route but the own connection. Every other opening of the own
 * connection stalls (connect() never answers: a lost SYN, given up at openMs = 1 s), the
 * others connect after `passMs`, so each round is "the first stalls, the hedge wins". Lease
 * 1 s, heartbeats 250 ms, statements 1 s; each owner holds 3 s and inserts one business row.
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const rowsTable = `"${schema}".pgrev24_engine_rows`;
const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
const STATEMENT_MS = 1_000;

beforeAll(async () => {
  await admin.query(
    `CREATE TABLE IF NOT EXISTS ${rowsTable} (id bigserial PRIMARY KEY, scope text NOT NULL, k text NOT NULL)`,
  );
});
afterAll(() => admin.end());

async function scenario(opts: {
  keys: string[];
  passMs: number;
  /** 'chaos': the own backend killed every 500 ms and duplicates every 150 ms; 'once': one kill once the first hedge opened. */
  mode: 'chaos' | 'once';
}) {
  const ownApp = randomName('p24own');
  const probe = startLoadProbe();
  const stats = { openings: 0, running: 0, maxRunning: 0, kills: 0 };
  const t0 = performance.now();
  const events: string[] = [];
  const at = () => Math.round(performance.now() - t0);
  let connected = 0;
  class GatedClient extends pg.Client {
    constructor(config: pg.ClientConfig) {
      const own = (config as { statement_timeout?: unknown }).statement_timeout === STATEMENT_MS;
      super(own ? { ...config, application_name: ownApp } : config);
      if (!own) return;
      const connect = this.connect.bind(this) as unknown as Loose;
      const stream = (this as unknown as { connection: { stream: NodeJS.EventEmitter } }).connection
        .stream;
      (this as unknown as { connect: Loose }).connect = () => {
        const n = stats.openings++;
        stats.running++;
        stats.maxRunning = Math.max(stats.maxRunning, stats.running);
        events.push(`${at()} open#${n}`);
        let done = false;
        const finish = () => {
          if (done) return;
          done = true;
          stats.running--;
          events.push(`${at()} end#${n}`);
        };
        stream.once('close', finish);
        if (n % 2 === 0) return new Promise(() => {});
        return sleep(opts.passMs)
          .then(() => connect())
          .then(() => {
            connected++;
          })
          .finally(finish);
      };
    }
  }
  const pool = new pg.Pool({
    connectionString: DATABASE_URL,
    max: opts.keys.length,
    Client: GatedClient,
  } as unknown as pg.PoolConfig);
  pool.on('error', () => {});
  const store = createPostgresStore({
    pool,
    table,
    keyPrefix: randomName('p24e'),
    statementTimeoutMs: STATEMENT_MS,
  });
  const engine = createPostgresIdempotency<string>({ store, leaseMs: 1_000, heartbeatMs: 250 });
  const scope = randomName('scope');
  const aborted: string[] = [];
  const runs: Record<string, number> = {};
  const op =
    (key: string) =>
    async ({ tx, signal }: { tx: pg.PoolClient; signal: AbortSignal }) => {
      runs[key] = (runs[key] ?? 0) + 1;
      const onAbort = () => {
        aborted.push(key);
        events.push(`${at()} abort ${key}`);
      };
      // Aborted before the operation started (the lease lost while the execution waited for a
      // pool connection): no 'abort' event comes for a listener added now.
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort);
      await tx.query(`INSERT INTO ${rowsTable} (scope, k) VALUES ($1, $2)`, [scope, key]);
      const until = performance.now() + 3_000;
      while (performance.now() < until) {
        signal.throwIfAborted();
        await sleep(50);
      }
      return key;
    };
  const settleIn = (p: Promise<unknown>) =>
    Promise.race([
      p.then(
        () => 'ok',
        (e: unknown) => (e as Error).name,
      ),
      sleep(10_000).then(() => 'HUNG'),
    ]);
  // The owners' pool connections opened beforehand: an acquisition that also opens a backend
  // takes hundreds of ms on a loaded machine, and the first renewal cannot go out before the
  // acquisition is answered (it and the stalled opening's hedge must fit in the lease).
  const warm = await Promise.all(opts.keys.map(() => pool.connect()));
  for (const c of warm) c.release();
  const owners = opts.keys.map((k) => settleIn(engine.execute({ key: k, scope }, op(k))));
  const dups: Promise<string>[] = [];
  if (opts.mode === 'chaos') {
    await sleep(150);
    const stopKilling = terminateEvery(admin, ownApp, 500, stats);
    for (let i = 0; i < 12; i++) {
      for (const k of opts.keys) dups.push(settleIn(engine.execute({ key: k, scope }, op(k))));
      await sleep(150);
    }
    await Promise.all(owners);
    await stopKilling();
  } else {
    for (let i = 0; i < 200 && connected === 0; i++) await sleep(10);
    await sleep(100);
    const { rowCount } = await admin.query(
      'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1',
      [ownApp],
    );
    stats.kills += rowCount ?? 0;
    events.push(`${at()} killed ${rowCount}`);
  }
  const ownerOutcomes = await Promise.all(owners);
  const dupOutcomes = await Promise.all(dups);
  const ended = await Promise.race([
    pool.end().then(() => 'ended'),
    sleep(3_000).then(() => 'hung'),
  ]);
  await sleep(1_200); // every stalled opening given up (openMs 1 s)
  const left = (
    await admin.query(
      'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
      [ownApp],
    )
  ).rows[0].n as number;
  const committed = (
    await admin.query<{ k: string; n: number }>(
      `SELECT k, count(*)::int AS n FROM ${rowsTable} WHERE scope = $1 GROUP BY k`,
      [scope],
    )
  ).rows;
  const tally = (xs: string[]) =>
    xs.reduce<Record<string, number>>((m, x) => {
      m[x] = (m[x] ?? 0) + 1;
      return m;
    }, {});
  // Whether the machine kept up with the lease (1 s, heartbeats 250 ms): a renewal lands
  // before the estimate while a round trip stays under leaseMs - heartbeatMs.
  const slowness = Math.round(probe.slowness(t0, performance.now()));
  await probe.stop();
  const result = {
    slowness,
    keptUp: slowness < 1_000 - 250,
    ownerOutcomes,
    dupOutcomes,
    dups: tally(dupOutcomes),
    runs,
    aborted,
    committed,
    stats,
    ended,
    left,
    events,
  };
  console.log(`pgrev24 engine ${opts.mode}`, {
    ...result,
    dupOutcomes: undefined,
    events: events.join(' | '),
  });
  return result;
}

describe('pgrev24: hedged own openings through the engine', () => {
  it('chaos (own backend killed every 500 ms, duplicates): exactly once, every execute settles, nothing left open', async () => {
    const r = await scenario({ keys: ['a', 'b', 'c'], passMs: 30, mode: 'chaos' });
    expect([...r.ownerOutcomes, ...r.dupOutcomes]).not.toContain('HUNG');
    expect(r.ended).toBe('ended');
    expect(r.left).toBe(0);
    for (const row of r.committed) expect(row.n).toBe(1);
    // A key runs again only after its owner was aborted (its row never committed).
    // While the machine kept up with the lease; a process or server held up past the lease's
    // margin loses it without an abort in time (the core's lease keeper renews late, the
    // store refuses its outcome): then the exactly-once above is what holds.
    if (r.keptUp)
      for (const [k, n] of Object.entries(r.runs))
        expect(n).toBeLessThanOrEqual(1 + r.aborted.filter((x) => x === k).length);
    expect(r.stats.kills).toBeGreaterThan(0);
  }, 40_000);

  // Was FINDING (LOW), fixed: the second opening comes at a third of the time counted from the opening's start: the hedge's stall point is a third of the statement's limit counted from when the renewal began to wait, whatever the lease: two rounds in a row whose first opening stalls (a lost SYN on the opening, then the connection killed and a lost SYN again) cost each renewal ~333 ms + connect; with lease 1 s, heartbeat 250 ms, statement 1 s the second renewal lands after the lease estimate and the healthy owner is aborted (LeaseLostError; abort at ~1.3 s, the renewal's hedge opened at ~1.25 s). The first renewal hedged at ~0.6 s though its opening (begun by use() at ~0 ms) had already stalled 0.25 s before the renewal came: counting the stall from the opening's start (as for a statement sent again) would have saved that.
  it('one kill between two stalled openings: the healthy owner is not aborted', async () => {
    const r = await scenario({ keys: ['a'], passMs: 60, mode: 'once' });
    expect(r.stats.kills).toBe(1);
    for (const row of r.committed) expect(row.n).toBe(1);
    // Healthy while the machine kept up with its lease; held up past the lease's margin, the
    // owner may lose it, and is then told so (its outcome refused), never left hanging.
    if (r.keptUp) expect(r.ownerOutcomes).toEqual(['ok']);
    else expect(['ok', 'LeaseLostError']).toContain(r.ownerOutcomes[0]);
  }, 40_000);
});
