import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { RenewalConnection } from '../src/renewal-connection.js';
import { DATABASE_URL, randomName } from './pg-env.js';
import { isOwn, outcome, startPgrev22Proxy } from './pgrev22-proxy.js';
import { localPortOf } from './rcrev2-proxy.js';

/**
 * pgrev22: how many times does a statement reach the server? Each statement is an INSERT of
 * a tag into a counter table (autocommit), so every execution at the server leaves a row.
 * Flows are HELD (the client's bytes buffered and delivered late, after the client gave up
 * and closed): a send that timed out still arrives. A once-only statement (`rc.query`, the
 * termination by pid) must arrive at most once; a repeatable one at most twice.
 */
const schema = inject('pgSchema');
const hits = `"${schema}".pgrev22_hits`;
const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
const STATEMENT_MS = 2_000;

beforeAll(async () => {
  await admin.query(`CREATE TABLE IF NOT EXISTS ${hits} (tag text NOT NULL)`);
});
afterAll(() => admin.end());

async function count(tag: string): Promise<number> {
  const { rows } = await admin.query(`SELECT count(*)::int AS n FROM ${hits} WHERE tag = $1`, [
    tag,
  ]);
  return rows[0].n as number;
}

async function scenario(options: {
  repeatable: boolean;
  /** Idle pool connections, every one held. */
  idleHeld: number;
  /** The own connection's set-up delay (ms), or 'blackhole' to never open. */
  own: number | 'blackhole';
  max: number;
}) {
  const tag = randomName('tag');
  const proxy = await startPgrev22Proxy();
  const pool = new pg.Pool({
    connectionString: proxy.url,
    max: options.max,
    onConnect: async (client: pg.Client) => {
      if (typeof options.own === 'number' && isOwn(client, STATEMENT_MS)) await sleep(options.own);
    },
  } as unknown as pg.PoolConfig);
  pool.on('error', () => {});
  const warm = [];
  for (let i = 0; i < options.idleHeld; i++) warm.push(await pool.connect());
  const ports = warm.map((c) => localPortOf(c));
  for (const c of warm) {
    c.on('error', () => {});
    c.release();
  }
  for (const p of ports) proxy.hold(p);
  if (options.own === 'blackhole') proxy.state.mode = 'blackhole';
  const rc = new RenewalConnection(pool, 1_200, STATEMENT_MS);
  const done = rc.use();
  proxy.state.mode = 'pass'; // after the own opening began
  try {
    const t0 = performance.now();
    const config = { text: `INSERT INTO ${hits} VALUES ('${tag}')`, query_timeout: 1_500 };
    const result = await outcome(
      options.repeatable
        ? rc.repeatable.query(config as pg.QueryConfig)
        : rc.query(config as pg.QueryConfig),
      t0,
    );
    const beforeRelease = await count(tag);
    for (const p of ports) proxy.release(p);
    await sleep(400);
    // Another statement afterwards (the own connection or pool free now): nothing more of it.
    await rc.repeatable.query({ text: 'SELECT 1', query_timeout: 1_500 } as pg.QueryConfig);
    await sleep(100);
    return { result, beforeRelease, server: await count(tag), total: pool.totalCount };
  } finally {
    done();
    await Promise.race([pool.end(), sleep(2_000)]);
    proxy.close();
  }
}

describe('pgrev22: sends of one statement that reach the server', () => {
  it('once-only (rc.query) to a held idle pool connection, own connection opening: at most once', async () => {
    const r = await scenario({ repeatable: false, idleHeld: 1, own: 300, max: 3 });
    console.log('pgrev22 sends once-only', r);
    expect(r.result).not.toMatch(/^ok/);
    expect(r.server).toBe(1);
  }, 10_000);

  it('once-only, every idle pool connection held and the own opening silent: at most once', async () => {
    const r = await scenario({ repeatable: false, idleHeld: 3, own: 'blackhole', max: 3 });
    console.log('pgrev22 sends once-only silent own', r);
    expect(r.server).toBeLessThanOrEqual(1);
  }, 10_000);

  it('repeatable: held idle A, grown to held idle B, own open at 900 ms: at most twice', async () => {
    const r = await scenario({ repeatable: true, idleHeld: 2, own: 900, max: 4 });
    console.log('pgrev22 sends repeatable two held', r);
    expect(r.server).toBeLessThanOrEqual(2);
    expect(r.total).toBeLessThanOrEqual(4);
  }, 10_000);

  it('repeatable: held idle A, a new pool connection grown, answered there: exactly twice', async () => {
    const r = await scenario({ repeatable: true, idleHeld: 1, own: 'blackhole', max: 4 });
    console.log('pgrev22 sends repeatable grown', r);
    expect(r.result).toMatch(/^ok/);
    expect(r.server).toBeLessThanOrEqual(2);
  }, 10_000);
});
