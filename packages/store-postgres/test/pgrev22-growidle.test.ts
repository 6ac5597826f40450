import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { RenewalConnection } from '../src/renewal-connection.js';
import { isOwn, outcome, startPgrev22Proxy } from './pgrev22-proxy.js';
import { localPortOf } from './rcrev2-proxy.js';

/**
 * pgrev22: grow() for a statement sent again "opens a new pool connection in the
 * background" (sendFresh: "Known alive, it just opened"). But pool.connect() hands out an
 * IDLE pool connection when there is one. A NAT drops every idle flow of the pool at once
 * (A and B frozen); the own connection opens slowly but fine (900 ms). Renewal J (limit
 * 1.5 s) goes to idle A, is sent again at ~500 ms: does it wait for the own connection (open
 * at ~900 ms) or a really new pool connection, or is it sent to the other dead idle one?
 */
const STATEMENT_MS = 2_000;

async function scenario(idleDead: number) {
  const proxy = await startPgrev22Proxy();
  const pool = new pg.Pool({
    connectionString: proxy.url,
    max: 4,
    onConnect: async (client: pg.Client) => {
      if (isOwn(client, STATEMENT_MS)) await sleep(900);
    },
  } as unknown as pg.PoolConfig);
  pool.on('error', () => {});
  try {
    const warm = [];
    for (let i = 0; i < idleDead; i++) warm.push(await pool.connect());
    for (const c of warm) {
      c.on('error', () => {});
      proxy.freeze(localPortOf(c));
      c.release();
    }
    const rc = new RenewalConnection(pool, 1_500, STATEMENT_MS);
    const t0 = performance.now();
    const done = rc.use(); // the own opening begins: ready at ~900 ms
    const j = await outcome(
      rc.repeatable.query({ text: 'SELECT 1', query_timeout: 1_500 } as pg.QueryConfig),
      t0,
    );
    done();
    return { j, total: pool.totalCount, accepted: proxy.state.accepted };
  } finally {
    await Promise.race([pool.end(), sleep(2_000)]);
    proxy.close();
  }
}

describe('pgrev22: a statement sent again grows onto an idle (dead) pool connection', () => {
  it('control: one dead idle connection: the grown one is new, the renewal succeeds', async () => {
    const r = await scenario(1);
    console.log('pgrev22 growidle control', r);
    expect(r.j).toMatch(/^ok/);
  }, 10_000);

  // FIXED (was FINDING MEDIUM): grow() for a statement sent again calls pool.connect(), which hands out an idle pool connection (not a new one); with the pool's idle flows dead (NAT) the second send goes to another dead one and the renewal fails at its limit although the own connection opened at ~900 ms.
  it('two dead idle connections: the renewal sent again reaches a live route within its limit', async () => {
    const r = await scenario(2);
    console.log('pgrev22 growidle', r);
    expect(r.j).toMatch(/^ok/);
  }, 10_000);
});
