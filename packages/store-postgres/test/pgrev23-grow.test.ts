import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RenewalConnection } from '../src/renewal-connection.js';
import { DATABASE_URL } from './pg-env.js';
import { isOwn, outcome, startPgrev22Proxy } from './pgrev22-proxy.js';

/**
 * pgrev23: statements grown a pool connection while the own opening stalls (a21ecf2). The
 * own connection's set-up takes `ownMs`, a pool connection's `poolMs`. Sends are counted
 * as rows inserted by the statement.
 */
const STATEMENT_MS = 2_000;
const table = `pgrev23_${randomBytes(4).toString('hex')}`;
const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });

beforeAll(async () => {
  await admin.query(`create table ${table} (tag text)`);
});
afterAll(async () => {
  await admin.query(`drop table if exists ${table}`);
  await admin.end();
});

function setup(o: { ownMs: number; poolMs: number; max?: number }) {
  const pool = new pg.Pool({
    connectionString: DATABASE_URL,
    max: o.max ?? 4,
    onConnect: async (client: pg.Client) => {
      await sleep(isOwn(client, STATEMENT_MS) ? o.ownMs : o.poolMs);
    },
  } as unknown as pg.PoolConfig);
  pool.on('error', () => {});
  let peak = 0;
  const watch = setInterval(() => {
    peak = Math.max(peak, pool.totalCount);
  }, 2);
  const rc = new RenewalConnection(pool, 5_000, STATEMENT_MS, 200);
  return {
    pool,
    rc,
    peak: () => Math.max(peak, pool.totalCount),
    end: async () => {
      clearInterval(watch);
      await Promise.race([pool.end(), sleep(2_000)]);
    },
  };
}

const ins = (tag: string, ms: number) =>
  ({
    text: `insert into ${table} values ($1)`,
    values: [tag],
    query_timeout: ms,
  }) as pg.QueryConfig;
const sends = async (tag: string) =>
  Number((await admin.query(`select count(*) n from ${table} where tag = $1`, [tag])).rows[0].n);

describe('pgrev23: grown connections', () => {
  it('own opens before the grown one: the grown one is released, not leaked; one send', async () => {
    const s = setup({ ownMs: 400, poolMs: 800 });
    try {
      const t0 = performance.now();
      const r = await outcome(s.rc.repeatable.query(ins('leak', 600)), t0);
      await sleep(1_000);
      const state = { total: s.pool.totalCount, idle: s.pool.idleCount, n: await sends('leak') };
      console.log('pgrev23 grow leak', r, state, s.peak());
      expect(r).toMatch(/^ok /);
      expect(state.n).toBe(1);
      expect(state.total).toBe(1);
      expect(state.idle).toBe(1);
    } finally {
      await s.end();
    }
  }, 10_000);

  it('a once-only statement (rc.query) grown, own opens soon after: sent once', async () => {
    const s = setup({ ownMs: 700, poolMs: 0 });
    try {
      const t0 = performance.now();
      const r = await outcome(s.rc.query(ins('once', 1_500)), t0);
      await sleep(800);
      const n = await sends('once');
      console.log('pgrev23 grow once', r, n);
      expect(r).toMatch(/^ok /);
      expect(n).toBe(1);
    } finally {
      await s.end();
    }
  }, 10_000);

  it('20 statements, max 3, app holds 1: peak within max, each sent once, app connect served', async () => {
    const s = setup({ ownMs: 3_000, poolMs: 150, max: 3 });
    const app = await s.pool.connect();
    try {
      const t0 = performance.now();
      const all = Array.from({ length: 20 }, (_, i) =>
        outcome(
          i % 2
            ? s.rc.query(ins(`many${i}`, 1_800))
            : s.rc.repeatable.query(ins(`many${i}`, 1_800)),
          t0,
        ),
      );
      await sleep(700);
      const c0 = performance.now();
      const c = await s.pool.connect();
      const waited = Math.round(performance.now() - c0);
      c.release();
      const rs = await Promise.all(all);
      const n = await Promise.all(all.map((_, i) => sends(`many${i}`)));
      console.log('pgrev23 grow many', rs, n, 'peak', s.peak(), 'app waited', waited);
      expect(s.peak()).toBeLessThanOrEqual(3);
      for (let i = 0; i < 20; i++) expect(n[i]).toBeLessThanOrEqual(i % 2 ? 1 : 2);
      expect(waited).toBeLessThan(1_000);
    } finally {
      app.release();
      await s.end();
    }
  }, 15_000);

  it('lost own flow (proxy blackholes its connection): one grown connection, answered, nothing after end', async () => {
    const proxy = await startPgrev22Proxy();
    const pool = new pg.Pool({ connectionString: proxy.url, max: 4 });
    pool.on('error', () => {});
    const rc = new RenewalConnection(pool, 3_000, STATEMENT_MS, 200);
    try {
      proxy.state.mode = 'blackhole';
      const t0 = performance.now();
      const p = outcome(rc.repeatable.query(ins('lost', 1_500)), t0);
      await sleep(100);
      const first = proxy.state.accepted;
      proxy.state.mode = 'pass';
      const r = await p;
      const afterAnswer = proxy.state.accepted;
      await Promise.race([pool.end(), sleep(2_000)]);
      await sleep(800);
      const n = await sends('lost');
      console.log('pgrev23 grow lost', r, { first, afterAnswer, end: proxy.state.accepted, n });
      expect(r).toMatch(/^ok /);
      expect(first).toBe(1);
      expect(afterAnswer).toBe(2);
      expect(proxy.state.accepted).toBe(2);
      expect(n).toBe(1);
    } finally {
      proxy.close();
    }
  }, 10_000);
});
