import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { hammerKeys, terminateEvery } from './hammer.js';
import { startLoadProbe } from './load-probe.js';
import { DATABASE_URL, randomName, sleep } from './pg-env.js';

/**
 * pgrev21: the exactly-once hammer through the engine while the renewal connection's openings
 * fail intermittently (the pool's onConnect hook fails, after a random delay, half of the own
 * connection's set-ups; a killer ends the own connection's backend every 400 ms so it must
 * open again). Owners hold their keys 3 s with a 1 s lease and 250 ms heartbeats; duplicates
 * of every key arrive every 100 ms. Each operation run and each committed business row is
 * counted per key.
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const rowsTable = `"${schema}".pgrev21_hammer_rows`;
const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 2 });
const OWN_APP = randomName('pgrev21own');
const STATEMENT_MS = 1_000;

beforeAll(async () => {
  await admin.query(
    `CREATE TABLE IF NOT EXISTS ${rowsTable} (id bigserial PRIMARY KEY, scope text NOT NULL, k text NOT NULL, fence bigint NOT NULL)`,
  );
});
afterAll(() => admin.end());

describe('pgrev21: exactly-once while the own connection opens badly', () => {
  for (const [max, failRate] of [
    [10, 0.5],
    [7, 0.5],
    [7, 0.85],
  ] as const)
    it(`pool max ${max}, ${failRate * 100}% of own set-ups fail: no key runs twice, no duplicate while its owner is healthy; every execute settles`, async () => {
      const stats = { ownOpenings: 0, ownFailures: 0, kills: 0 };
      const app = randomName('pgrev21h');
      const pool = new pg.Pool({
        connectionString: DATABASE_URL,
        max,
        connectionTimeoutMillis: 2_000,
        application_name: app,
        onConnect: async (client: pg.Client) => {
          const params = (
            client as unknown as { connectionParameters: { statement_timeout?: unknown } }
          ).connectionParameters;
          if (params.statement_timeout !== STATEMENT_MS) return; // a pool client
          stats.ownOpenings++;
          await sleep(Math.random() * 200);
          if (Math.random() < failRate) {
            stats.ownFailures++;
            throw new Error('pgrev21: own set-up fails');
          }
          await client.query(`SET application_name = '${OWN_APP}'`);
        },
      } as unknown as pg.PoolConfig);
      pool.on('error', () => {});
      const store = createPostgresStore({
        pool,
        table,
        keyPrefix: randomName('p21h'),
        statementTimeoutMs: STATEMENT_MS,
      });
      const engine = createPostgresIdempotency<string>({ store, leaseMs: 1_000, heartbeatMs: 250 });
      const scope = randomName('scope');
      const OWNERS = 6;
      const keys = Array.from({ length: OWNERS }, (_, i) => `key${i}`);
      type Run = { start: number; end?: number; aborted?: number; by: string; error?: string };
      const runs = new Map<string, Run[]>(keys.map((k) => [k, []]));
      const operation =
        (key: string, by: string, holder: { run?: Run }) =>
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
          holder.run = run;
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
            const until = performance.now() + 3_000;
            while (performance.now() < until) {
              signal.throwIfAborted();
              await sleep(50);
            }
            return `${key}:${by}`;
          } finally {
            run.end = performance.now();
          }
        };
      // The owners' pool connections opened beforehand (an acquisition that also opens a
      // backend is slow on a loaded machine, and the first renewal waits for it).
      const warm = await Promise.all(keys.map(() => pool.connect()));
      for (const c of warm) c.release();
      const probe = startLoadProbe();
      const stopKilling = terminateEvery(admin, OWN_APP, 400, stats);
      const outcomes = await hammerKeys(
        keys,
        (key, role) => {
          const holder: { run?: Run } = {};
          return engine.execute({ key, scope }, operation(key, role, holder)).catch((e) => {
            if (holder.run) holder.run.error = (e as Error).name;
            throw e;
          });
        },
        3_500,
      );
      await stopKilling();
      await probe.stop();
      await pool.end();
      await sleep(300);
      const left = Number(
        (
          await admin.query(
            'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = ANY($1)',
            [[app, OWN_APP]],
          )
        ).rows[0].n,
      );
      const committed = (
        await admin.query<{ k: string; n: number }>(
          `SELECT k, count(*)::int AS n FROM ${rowsTable} WHERE scope = $1 GROUP BY k`,
          [scope],
        )
      ).rows;
      const count = (o: string) => outcomes.filter((x) => x === o).length;
      const perKey = [...runs].map(
        ([k, r]) => `${k}:${r.map((x) => `${x.by}${x.aborted ? '!' : ''}`).join(',')}`,
      );
      console.log('pgrev21 hammer', max, failRate, stats, {
        ok: count('ok'),
        conflicts: count('409'),
        hung: count('HUNG'),
        other: outcomes.filter((o) => o !== 'ok' && o !== '409'),
        committed,
        perKey,
        left,
      });
      expect(count('HUNG')).toBe(0);
      expect(left).toBe(0);
      for (const row of committed) expect(row.n).toBe(1);
      // No two runs of a key overlap, and a second run begins only after the first aborted
      // and its lease (1 s from its last renewal, at least from the abort) could have passed.
      // A first owner is healthy while the machine keeps up with its lease (a round trip, the
      // event loop's hold-ups included, under leaseMs - heartbeatMs = 750 ms: the core's lease
      // keeper lands every renewal before its estimate then). Held up past that, it may lose
      // the lease without an abort in time; the store then refuses its outcome
      // (LeaseLostError), which is what is asserted of it.
      const slowness = (run: Run, next: Run) => probe.slowness(run.start, next.start);
      for (const [, list] of runs) {
        for (let i = 1; i < list.length; i++) {
          const prev = list[i - 1] as Run;
          const next = list[i] as Run;
          if (prev.aborted === undefined && slowness(prev, next) >= 750)
            expect(prev.error, 'an owner held up past its lease was not refused').toBe(
              'LeaseLostError',
            );
          else expect(prev.aborted, 'a second run while the first owner was healthy').toBeDefined();
          expect(next.start).toBeGreaterThanOrEqual(prev.end ?? Number.POSITIVE_INFINITY);
        }
      }
      expect(stats.ownOpenings).toBeGreaterThan(0);
    }, 60_000);
});
