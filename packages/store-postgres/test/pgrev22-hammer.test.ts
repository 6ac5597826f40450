import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { hammerKeys, terminateEvery } from './hammer.js';
import { DATABASE_URL, randomName, sleep } from './pg-env.js';
import { isOwn, startPgrev22Proxy } from './pgrev22-proxy.js';
import { localPortOf } from './rcrev2-proxy.js';

/**
 * pgrev22: the exactly-once hammer through the engine with frozen pool connections and
 * stalling own openings. Behind the proxy: every 250 ms the most recently idle pool
 * connection's flow is frozen (a NAT drop: the next renewal or business transaction there
 * hangs); 40% of the own connection's set-ups stall until the opening limit, the rest take
 * up to 300 ms; a killer ends the own connection's backend every 700 ms. Six owners hold their
 * keys 2.5 s (lease 1 s, heartbeats 250 ms, statements 1 s); duplicates of every key arrive
 * every 100 ms for 3 s. Each run and each committed business row is counted per key; the
 * pool's size is sampled.
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const rowsTable = `"${schema}".pgrev22_hammer_rows`;
const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
const STATEMENT_MS = 1_000;

beforeAll(async () => {
  await admin.query(
    `CREATE TABLE IF NOT EXISTS ${rowsTable} (id bigserial PRIMARY KEY, scope text NOT NULL, k text NOT NULL, fence bigint NOT NULL)`,
  );
});
afterAll(() => admin.end());

describe('pgrev22: exactly-once with frozen pool flows and stalling own openings', () => {
  for (const max of [8, 5])
    it(`pool max ${max}: no key committed twice, no second run while its owner is healthy, pool within max, every execute settles`, async () => {
      const proxy = await startPgrev22Proxy();
      const ownApp = randomName('pgrev22own');
      const stats = { ownOpenings: 0, stalls: 0, freezes: 0, kills: 0 };
      const pool = new pg.Pool({
        connectionString: proxy.url,
        max,
        connectionTimeoutMillis: 2_000,
        onConnect: async (client: pg.Client) => {
          if (!isOwn(client, STATEMENT_MS)) return;
          stats.ownOpenings++;
          if (Math.random() < 0.4) {
            stats.stalls++;
            await new Promise(() => {});
          }
          await sleep(Math.random() * 300);
          await client.query(`SET application_name = '${ownApp}'`);
        },
      } as unknown as pg.PoolConfig);
      pool.on('error', () => {});
      const store = createPostgresStore({
        pool,
        table,
        keyPrefix: randomName('p22h'),
        statementTimeoutMs: STATEMENT_MS,
      });
      const engine = createPostgresIdempotency<string>({ store, leaseMs: 1_000, heartbeatMs: 250 });
      const scope = randomName('scope');
      const keys = Array.from({ length: 6 }, (_, i) => `key${i}`);
      type Run = {
        start: number;
        end?: number;
        aborted?: number;
        returned?: boolean;
        threw?: string;
        by: string;
      };
      const runs = new Map<string, Run[]>(keys.map((k) => [k, []]));
      const operation =
        (key: string, by: string) =>
        async ({
          tx,
          fence,
          signal,
        }: {
          tx: pg.PoolClient;
          fence: number;
          signal: AbortSignal;
        }) => {
          const run: Run = { start: performance.now(), by };
          runs.get(key)?.push(run);
          // A signal aborted before the operation started (the lease lost while the execution
          // waited for a pool connection) fires no 'abort' event for a listener added now.
          if (signal.aborted) run.aborted = run.start;
          else
            signal.addEventListener('abort', () => {
              run.aborted ??= performance.now();
            });
          try {
            await tx.query(`INSERT INTO ${rowsTable} (scope, k, fence) VALUES ($1, $2, $3)`, [
              scope,
              key,
              fence,
            ]);
            const until = performance.now() + 2_500;
            while (performance.now() < until) {
              signal.throwIfAborted();
              await sleep(50);
            }
            run.returned = true;
            return `${key}:${by}`;
          } catch (error) {
            if (run.aborted === undefined) run.threw = (error as Error).message.slice(0, 40);
            throw error;
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
        while (chaos) {
          await sleep(250);
          const idle = (pool as unknown as { _idle: { client: pg.PoolClient }[] })._idle;
          const top = idle[idle.length - 1]?.client;
          if (top) {
            proxy.freeze(localPortOf(top));
            stats.freezes++;
          }
        }
      })();
      const stopKilling = terminateEvery(admin, ownApp, 700, stats);
      const outcomes = await hammerKeys(
        keys,
        (key, role) => engine.execute({ key, scope }, operation(key, role)),
        3_000,
      );
      chaos = false;
      await Promise.all([freezer, stopKilling()]);
      clearInterval(sampler);
      const ended = await Promise.race([
        pool.end().then(() => 'ended'),
        sleep(4_000).then(() => 'hung'),
      ]);
      proxy.close();
      const committed = (
        await admin.query<{ k: string; n: number }>(
          `SELECT k, count(*)::int AS n FROM ${rowsTable} WHERE scope = $1 GROUP BY k`,
          [scope],
        )
      ).rows;
      const count = (o: string) => outcomes.filter((x) => x === o).length;
      const perKey = [...runs].map(
        ([k, r]) =>
          `${k}:${r.map((x) => `${x.by}${x.aborted ? '!' : x.threw ? `(${x.threw})` : ''}`).join(',')}`,
      );
      console.log('pgrev22 hammer', max, stats, {
        ok: count('ok'),
        conflicts: count('409'),
        hung: count('HUNG'),
        other: outcomes.filter((o) => o !== 'ok' && o !== '409').slice(0, 8),
        otherCount: outcomes.filter((o) => o !== 'ok' && o !== '409').length,
        committed,
        perKey,
        peak,
        ended,
        releaseListeners: pool.listenerCount('release'),
      });
      expect(count('HUNG')).toBe(0);
      expect(ended).toBe('ended');
      expect(peak).toBeLessThanOrEqual(max);
      for (const row of committed) expect(row.n).toBe(1);
      for (const [, list] of runs) {
        for (let i = 1; i < list.length; i++) {
          const prev = list[i - 1] as Run;
          const next = list[i] as Run;
          // A run that returned is the key's one execution; one that was aborted or failed on
          // its own (its business statement hit a frozen flow) committed nothing.
          expect(prev.returned, 'a second run after one that completed').toBeUndefined();
          expect(
            prev.aborted !== undefined || prev.threw !== undefined,
            'a second run while the first owner was healthy',
          ).toBe(true);
          expect(next.start).toBeGreaterThanOrEqual(prev.end ?? Number.POSITIVE_INFINITY);
        }
      }
      expect(stats.ownOpenings).toBeGreaterThan(0);
    }, 30_000);
});
