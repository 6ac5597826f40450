import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { makePool, randomName, sleep } from './pg-env.js';
import { localPortOf } from './rcrev2-proxy.js';
import { startRcrev3Proxy } from './rcrev3-proxy.js';
import { insertCharge } from './take-over.js';

/**
 * rcrev3: adversarial review (third round) of the renewal routes (164c1c3) through the
 * transactional engine: many owners at once with stale or stalled pool connections, duplicates
 * hammering, and pool.end() mid-execution.
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const charges = `"${schema}".rcrev3_life_charges`;
const raw = makePool({ max: 3 });

beforeAll(async () => {
  await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
});
afterAll(() => raw.end());

type Idle = { _idle: { client: unknown }[] };
const idleClients = (pool: pg.Pool) => (pool as unknown as Idle)._idle.map((i) => i.client);

async function until(check: () => boolean, limitMs: number): Promise<boolean> {
  const end = performance.now() + limitMs;
  while (performance.now() < end) {
    if (check()) return true;
    await sleep(20);
  }
  return false;
}

const backendsNamed = async (name: string) =>
  Number(
    (
      await raw.query(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
        [name],
      )
    ).rows[0].n,
  );

describe('rcrev3: owners, duplicates and the pool', () => {
  // Held: ten owners acquired together, each holding for 3.5 s (lease 1.5 s, heartbeats every
  // 300 ms, statement limit 500 ms), on a pool of 14 whose four other connections are idle
  // with their flows stalled once the owners hold (bytes delivered late, after the test's
  // duplicates ran; stalled before, they fail the acquisitions instead, not a renewal). Every
  // heartbeat of ten owners lands at once: own connection first, one to a stalled pool
  // connection (sent again on the own connection after a third), the rest queued. A duplicate
  // of each key is tried every 100 ms meanwhile (its own pool). No owner aborted, every
  // duplicate got 409 while its owner held, one business row per key.
  it('ten owners with stalled idle pool connections and duplicates hammering: none aborted, one row each', async () => {
    const proxy = await startRcrev3Proxy();
    const pool = new pg.Pool({
      connectionString: proxy.url,
      max: 14,
      idleTimeoutMillis: 0,
      query_timeout: 20_000,
    });
    pool.on('error', () => {});
    const dupPool = makePool({ max: 4 });
    const keyPrefix = randomName('r3ten');
    const settings = { leaseMs: 1_500, heartbeatMs: 300, maxHoldMs: 60_000 };
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool, table, keyPrefix, statementTimeoutMs: 500 }),
      ...settings,
    });
    const duplicates = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool: dupPool, table, keyPrefix }),
      ...settings,
    });
    const scope = randomName('scope');
    const keys = Array.from({ length: 10 }, (_, i) => `k${i}`);
    const aborted: string[] = [];
    let holding = 0;
    const stalled: number[] = [];
    const refused: string[] = [];
    try {
      // The owners' connections opened beforehand: ten openings through the proxy at once
      // inside the acquisitions' 500 ms limit fail some acquisitions on a loaded machine, and
      // the scenario is about owners that hold. An acquisition that still fails before its
      // operation ran (nothing held, nothing written) is tried again: the owner is one that
      // holds.
      const warm = await Promise.all(keys.map(() => pool.connect()));
      for (const c of warm) c.release();
      const own = async (key: string) => {
        for (let attempt = 1; ; attempt++) {
          let ran = false;
          try {
            return await engine.execute({ key, scope }, async ({ tx, fence, signal }) => {
              ran = true;
              signal.addEventListener('abort', () => aborted.push(key));
              await insertCharge(tx, charges, scope, fence);
              holding++;
              await sleep(3_500);
              return 'done';
            });
          } catch (error) {
            // (An acquisition given up at its limit may have landed: its record is then in
            // progress until its lease passes.)
            const name = (error as Error).name;
            const retry = name === 'StoreUnavailableError' || name === 'InProgressError';
            if (ran || attempt >= 20 || !retry) throw error;
            refused.push(`${key}: ${name} ${(error as Error).message}`);
            await sleep(200);
          }
        }
      };
      const owners = keys.map(own);
      const results = Promise.allSettled(owners);
      await until(() => holding === keys.length, 15_000);
      // Four more connections, then idle, their flows stalled: only renewals take them now.
      const extra = await Promise.all([1, 2, 3, 4].map(() => pool.connect()));
      for (const c of extra) c.release();
      for (const c of idleClients(pool)) {
        const p = localPortOf(c);
        proxy.stall(p);
        stalled.push(p);
      }
      let conflicts = 0;
      let ran = 0;
      let other = 0;
      const end = performance.now() + 2_500;
      while (performance.now() < end && holding === keys.length) {
        await Promise.all(
          keys.map((key) =>
            duplicates
              .execute({ key, scope }, async () => 'duplicate')
              .then(
                (r) => {
                  if (!r.replayed) ran++;
                },
                (error: unknown) => {
                  if ((error as Error).name === 'InProgressError') conflicts++;
                  else other++;
                },
              ),
          ),
        );
        await sleep(100);
      }
      const settled = await results;
      for (const p of stalled) proxy.unstall(p);
      const { rows } = await raw.query(
        `SELECT count(*)::int AS n, count(DISTINCT fence)::int AS fences FROM ${charges} WHERE scope = $1`,
        [scope],
      );
      console.info('ten owners, stalled idle pool connections', {
        holding,
        stalled: stalled.length,
        refused,
        aborted: aborted.length,
        fulfilled: settled.filter((s) => s.status === 'fulfilled').length,
        rejected: settled.flatMap((s) =>
          s.status === 'rejected'
            ? [`${(s.reason as Error).name}: ${(s.reason as Error).message}`]
            : [],
        ),
        conflicts,
        ran,
        other,
        rows: rows[0],
      });
      expect(holding).toBe(keys.length);
      expect(stalled.length).toBe(4);
      expect(aborted).toEqual([]);
      expect(settled.every((s) => s.status === 'fulfilled')).toBe(true);
      expect(ran).toBe(0);
      expect(conflicts).toBeGreaterThan(0);
      expect(rows[0]).toEqual({ n: keys.length, fences: 1 });
      expect(pool.totalCount).toBeLessThanOrEqual(14);
    } finally {
      proxy.close();
      await dupPool.end();
      void pool.end().catch(() => {});
    }
  });

  // Held: pool.end() called while an execution holds its record (its transaction on the pool's
  // only connection, renewals on the own connection): the owner keeps renewing (not aborted:
  // the own connection stays while it is used), commits, and the own connection's backend is
  // gone within 1 s of the execution's end; an engine used after pool.end() fails at once
  // (no backend opened for it).
  it('pool.end() mid-execution: the owner finishes, the own connection closes after it, a later execute opens nothing', async () => {
    const name = randomName('r3end');
    const pool = makePool({ max: 1, application_name: name, query_timeout: 20_000 });
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({
        pool,
        table,
        keyPrefix: randomName('r3end'),
        statementTimeoutMs: 500,
      }),
      leaseMs: 1_000,
      heartbeatMs: 200,
      maxHoldMs: 60_000,
    });
    const scope = randomName('scope');
    let signal: AbortSignal | undefined;
    let holding = false;
    const run = engine.execute({ key: 'k', scope }, async ({ tx, fence, signal: s }) => {
      signal = s;
      await insertCharge(tx, charges, scope, fence);
      holding = true;
      await sleep(2_500);
      return 'done';
    });
    expect(await until(() => holding, 5_000)).toBe(true);
    await sleep(300);
    // The business transaction's backend and the own connection's.
    expect(await backendsNamed(name)).toBe(2);
    const ended = pool.end();
    const result = await run;
    const doneAt = performance.now();
    await ended;
    expect(result).toEqual({ value: 'done', replayed: false });
    expect(signal?.aborted).toBe(false);
    let gone = false;
    while (performance.now() - doneAt < 3_000) {
      if ((await backendsNamed(name)) === 0) {
        gone = true;
        break;
      }
      await sleep(50);
    }
    const goneAfter = performance.now() - doneAt;
    await expect(engine.execute({ key: 'k2', scope }, async () => 'late')).rejects.toThrow();
    await sleep(300);
    const afterLate = await backendsNamed(name);
    console.info('pool.end mid-execution', { goneAfterMs: Math.round(goneAfter), afterLate });
    expect(gone).toBe(true);
    expect(goneAfter).toBeLessThan(1_000);
    expect(afterLate).toBe(0);
  });
});
