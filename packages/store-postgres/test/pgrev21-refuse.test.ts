import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { RenewalConnection } from '../src/renewal-connection.js';
import { DATABASE_URL, randomName } from './pg-env.js';
import { startPgrev21Proxy } from './pgrev21-proxy.js';

/**
 * pgrev21: a stream of renewals while the server (a proxy) refuses or blackholes new
 * connections and the pool's connections are all checked out (business transactions):
 * openings stay bounded (one per statement at most, plus the one use() began), every
 * statement settles within its limit plus one opening, nothing is left after pool.end().
 */
const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
afterAll(() => admin.end());

const backends = async (app: string) =>
  Number(
    (
      await admin.query(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
        [app],
      )
    ).rows[0].n,
  );

async function stream(mode: 'reset' | 'blackhole', openMs: number, limitMs: number) {
  const proxy = await startPgrev21Proxy();
  const app = randomName('pgrev21');
  const pool = new pg.Pool({ connectionString: proxy.url, max: 2, application_name: app });
  pool.on('error', () => {});
  const rc = new RenewalConnection(pool, openMs, 2_000);
  // Both pool connections held (business transactions): no idle one, pool at max.
  const held = [await pool.connect(), await pool.connect()];
  const before = proxy.state.accepted;
  proxy.state.mode = mode;
  const done = rc.use();
  const late: number[] = [];
  const errors = new Map<string, number>();
  const runs: Promise<void>[] = [];
  const started = performance.now();
  let sent = 0;
  while (performance.now() - started < 1_500) {
    const at = performance.now();
    sent++;
    runs.push(
      rc.repeatable.query({ text: 'SELECT 1', query_timeout: limitMs } as pg.QueryConfig).then(
        () => {
          late.push(performance.now() - at - limitMs);
        },
        (error: unknown) => {
          late.push(performance.now() - at - limitMs);
          const name = (error as Error).name;
          errors.set(name, (errors.get(name) ?? 0) + 1);
        },
      ),
    );
    await sleep(25);
  }
  // Every statement settles (bounded by the test's own limit).
  const all = await Promise.race([
    Promise.all(runs).then(() => true),
    sleep(limitMs + openMs * 3 + 1_000).then(() => false),
  ]);
  const openings = proxy.state.accepted - before;
  done();
  proxy.state.mode = 'pass';
  for (const c of held) c.release();
  await pool.end();
  await sleep(300);
  const left = await backends(app);
  const openSockets = proxy.state.open;
  await proxy.close();
  return { sent, openings, all, maxLate: Math.max(...late), errors, left, openSockets };
}

describe('pgrev21: a refusing or silent server with a stream of renewals', () => {
  it('connections reset at once: openings at most one per statement (+1), all settle, nothing left', async () => {
    const r = await stream('reset', 500, 400);
    console.log('pgrev21 reset', { ...r, errors: [...r.errors] });
    expect(r.all).toBe(true);
    expect(r.openings).toBeLessThanOrEqual(r.sent + 1);
    expect(r.maxLate).toBeLessThan(500 + 100);
    expect(r.left).toBe(0);
    expect(r.openSockets).toBe(0);
  });

  it('connections blackholed: openings one per opening limit, all settle within limit + one opening, nothing left', async () => {
    const r = await stream('blackhole', 300, 700);
    console.log('pgrev21 blackhole', { ...r, errors: [...r.errors] });
    expect(r.all).toBe(true);
    // 1.5 s of stream and its tail, one opening at a time of 300 ms.
    expect(r.openings).toBeLessThanOrEqual(Math.ceil((1_500 + 700 + 300) / 300) + 1);
    expect(r.maxLate).toBeLessThan(300 + 100);
    expect(r.left).toBe(0);
    expect(r.openSockets).toBe(0);
  });
});
