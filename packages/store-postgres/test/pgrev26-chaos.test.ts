import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { hammerKeys, terminateEvery } from './hammer.js';
import { DATABASE_URL, randomName, sleep } from './pg-env.js';
import { startPgrev22Proxy } from './pgrev22-proxy.js';
import { localPortOf } from './rcrev2-proxy.js';

/** pg's overloaded methods, called through with whatever they were given. */
type Loose = (...args: unknown[]) => Promise<void>;
/**
 * pgrev26: exactly-once through the engine under the full chaos mix at once. Pool max = keys
 * (the owners hold it: at max), maxUses 3 (connections removed on release), no
 * connectionTimeoutMillis (grown connections bounded by openMs), behind the pgrev22 proxy:
 * every 300 ms the top idle pool flow is frozen; a third of the own connection's openings
 * stall at connect() (a lost SYN, GatedClient), the rest connect after 0-200 ms; the own
 * backend (application_name tag) is terminated every 400 ms. Owners hold 2.5 s (lease 1 s,
 * heartbeats 250 ms, statements 1 s); duplicates every 100 ms for 3 s.
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const rowsTable = `"${schema}".pgrev26_chaos_rows`;
const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
const STATEMENT_MS = 1_000;

beforeAll(async () => {
  await admin.query(
    `CREATE TABLE IF NOT EXISTS ${rowsTable} (id bigserial PRIMARY KEY, scope text NOT NULL, k text NOT NULL)`,
  );
});
afterAll(() => admin.end());

function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

describe('pgrev26: exactly-once under the chaos mix', () => {
  for (const seed of [11, 26])
    it(`seed ${seed}: no overlapping runs, one row per key, nothing hung, pool within max, nothing left`, async () => {
      const random = rng(seed);
      const proxy = await startPgrev22Proxy();
      const ownApp = randomName('p26own');
      const stats = { ownOpenings: 0, stalls: 0, freezes: 0, kills: 0 };
      class GatedClient extends pg.Client {
        constructor(config: pg.ClientConfig) {
          const own =
            (config as { statement_timeout?: unknown }).statement_timeout === STATEMENT_MS;
          super(own ? { ...config, application_name: ownApp } : config);
          if (!own) return;
          stats.ownOpenings++;
          const stall = random() < 0.33;
          const delay = Math.floor(random() * 200);
          if (stall) stats.stalls++;
          const connect = this.connect.bind(this) as unknown as Loose;
          (this as unknown as { connect: Loose }).connect = (...args) =>
            stall ? new Promise(() => {}) : sleep(delay).then(() => connect(...args));
        }
      }
      const keys = ['k0', 'k1', 'k2', 'k3'];
      const max = keys.length;
      const pool = new pg.Pool({
        connectionString: proxy.url,
        max,
        maxUses: 3,
        Client: GatedClient,
      } as unknown as pg.PoolConfig);
      pool.on('error', () => {});
      const store = createPostgresStore({
        pool,
        table,
        keyPrefix: randomName('p26c'),
        statementTimeoutMs: STATEMENT_MS,
      });
      const engine = createPostgresIdempotency<string>({ store, leaseMs: 1_000, heartbeatMs: 250 });
      const scope = randomName('scope');
      type Run = { start: number; end?: number; aborted?: number; returned?: boolean };
      const runs = new Map<string, Run[]>(keys.map((k) => [k, []]));
      const overlaps: string[] = [];
      const operation =
        (key: string) =>
        async ({ tx, signal }: { tx: pg.PoolClient; signal: AbortSignal }) => {
          const list = runs.get(key) as Run[];
          const now = performance.now();
          // Another run of the key still live (not ended, its signal not aborted).
          for (const other of list)
            if (other.end === undefined && other.aborted === undefined)
              overlaps.push(`${key}@${Math.round(now)}`);
          const run: Run = { start: now };
          list.push(run);
          signal.addEventListener('abort', () => {
            run.aborted ??= performance.now();
          });
          try {
            await tx.query(`INSERT INTO ${rowsTable} (scope, k) VALUES ($1, $2)`, [scope, key]);
            const until = performance.now() + 2_500;
            while (performance.now() < until) {
              signal.throwIfAborted();
              await sleep(50);
            }
            run.returned = true;
            return key;
          } finally {
            run.end = performance.now();
          }
        };
      let peak = 0;
      const sampler = setInterval(() => {
        peak = Math.max(peak, pool.totalCount);
      }, 2);
      let chaos = true;
      const freezer = (async () => {
        for (let i = 0; i < 40 && chaos; i++) {
          await sleep(300);
          const idle = (pool as unknown as { _idle: { client: pg.PoolClient }[] })._idle;
          const top = idle[idle.length - 1]?.client;
          if (top) {
            proxy.freeze(localPortOf(top));
            stats.freezes++;
          }
        }
      })();
      const stopKilling = terminateEvery(admin, ownApp, 400, stats);
      const outcomes = await hammerKeys(
        keys,
        (key) => engine.execute({ key, scope }, operation(key)),
        3_000,
      );
      chaos = false;
      await Promise.all([freezer, stopKilling()]);
      clearInterval(sampler);
      const ended = await Promise.race([
        pool.end().then(() => 'ended'),
        sleep(3_000).then(() => 'hung'),
      ]);
      const backends = async () =>
        (
          await admin.query(
            'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
            [ownApp],
          )
        ).rows[0].n as number;
      let own = await backends();
      for (let i = 0; i < 40 && own > 0; i++) {
        await sleep(50);
        own = await backends();
      }
      // A statement may still wait for a connection within its own time limit (a background
      // give-back of an execution that ended, retried after a store failure): the pool's
      // 'release' listener goes with the last of them, within that limit and a bit.
      let releaseListeners = pool.listenerCount('release');
      for (let i = 0; i < 60 && releaseListeners > 0; i++) {
        await sleep(50);
        releaseListeners = pool.listenerCount('release');
      }
      proxy.close();
      const committed = (
        await admin.query<{ k: string; n: number }>(
          `SELECT k, count(*)::int AS n FROM ${rowsTable} WHERE scope = $1 GROUP BY k`,
          [scope],
        )
      ).rows;
      const count = (o: string) => outcomes.filter((x) => x === o).length;
      const result = {
        stats,
        ok: count('ok'),
        conflicts: count('409'),
        hung: count('HUNG'),
        other: outcomes.filter((o) => o !== 'ok' && o !== '409').length,
        committed,
        runs: [...runs].map(([k, r]) => `${k}:${r.length}/${r.filter((x) => x.aborted).length}!`),
        overlaps,
        peak,
        ended,
        own,
        releaseListeners,
      };
      console.log(`pgrev26 chaos ${seed}`, result);
      expect(result.hung).toBe(0);
      expect(ended).toBe('ended');
      expect(overlaps).toEqual([]);
      for (const row of committed) expect(row.n).toBe(1);
      expect(peak).toBeLessThanOrEqual(max);
      expect(result.releaseListeners).toBe(0);
      expect(own).toBe(0);
      expect(stats.kills + stats.stalls).toBeGreaterThan(0);
    }, 15_000);
});
