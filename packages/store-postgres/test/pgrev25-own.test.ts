import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { RenewalConnection } from '../src/renewal-connection.js';
import { outcome, startPgrev22Proxy } from './pgrev22-proxy.js';
import { localPortOf } from './rcrev2-proxy.js';

/**
 * pgrev25: SILENT_AFTER_MS (676688b). A statement given less than 100 ms that times out on the
 * own connection keeps it ("a busy event loop is the likelier reason"). When the connection is
 * in fact dead (its flow frozen: a NAT dropped it), does the next statement recover within its
 * limit?
 *
 * Set-up: pool max 1 behind the pgrev22 proxy, its one connection held by a business
 * transaction (the own connection is the only route). S0 = pg_sleep(0.95) (limit 2 s) and S1
 * (limit 1 s) are submitted together; S1 waits behind S0 and is sent with ~45 ms left. The
 * own flow freezes as S0 is answered (S1's bytes are swallowed). S2 (limit 1.5 s) is submitted
 * when S1 failed; S3 after S2.
 */
const STATEMENT_MS = 2_000;

async function scenario() {
  const proxy = await startPgrev22Proxy();
  const pool = new pg.Pool({ connectionString: proxy.url, max: 1 });
  pool.on('error', () => {});
  const business = await pool.connect();
  business.on('error', () => {});
  const rc = new RenewalConnection(pool, 1_000, STATEMENT_MS);
  const inner = rc as unknown as { client?: pg.Client };
  const done = rc.use();
  try {
    for (let i = 0; i < 100 && inner.client === undefined; i++) await sleep(10);
    const own = inner.client as pg.Client;
    expect(own).toBeDefined();
    const t0 = performance.now();
    const s0 = rc.repeatable.query({
      text: 'SELECT pg_sleep(0.95)',
      query_timeout: 2_000,
    } as pg.QueryConfig);
    const s1 = outcome(
      rc.repeatable.query({ text: 'SELECT 1', query_timeout: 1_000 } as pg.QueryConfig),
      t0,
    );
    const s0r = await outcome(
      s0.then((r) => {
        proxy.freeze(localPortOf(own));
        return r;
      }),
      t0,
    );
    const s1r = await s1;
    const keptAfterS1 = inner.client === own;
    const t2 = performance.now();
    const s2 = await outcome(
      rc.repeatable.query({ text: 'SELECT 1', query_timeout: 1_500 } as pg.QueryConfig),
      t2,
    );
    const t3 = performance.now();
    const s3 = await outcome(
      rc.repeatable.query({ text: 'SELECT 1', query_timeout: 1_500 } as pg.QueryConfig),
      t3,
    );
    return { s0r, s1r, keptAfterS1, s2, s3 };
  } finally {
    done();
    business.release();
    await Promise.race([pool.end(), sleep(2_000)]);
    proxy.close();
  }
}

describe('pgrev25: the own connection kept after a short timeout', () => {
  // Was FINDING (LOW-MEDIUM), fixed: an own connection kept after a short timeout is suspect; a statement it leaves unanswered for a third of its time has it destroyed and is sent again: S1 (sent with ~45 ms left) times out at ~1000 ms and the frozen own
  // connection is kept; S2, a renewal given its full 1.5 s, is then sent on that dead
  // connection (node-postgres queues it behind the unanswered S1) and fails at its limit
  // ('Query read timeout' at ~1500 ms after its call), the only renewal route being that
  // connection; only then is it destroyed and S3 answered by a new one. A destroyed connection
  // would have had S2 answered on a new opening within ~30 ms. The doc accepts "a silent one
  // fails the next statement", but that statement is a renewal given its whole limit, i.e. a
  // held lease at risk. Fix: after a kept short timeout mark the connection suspect and give
  // the next statement on it the pool route's treatment (sent again elsewhere, a new opening,
  // after a third of its time, or: a short probe `SELECT 1` first), or keep it only when the
  // timer itself fired late (event-loop lag measured, e.g. the timeout fired > 50 ms after due).
  // The premise (S1 sent with less than 100 ms of its limit left, so that its timeout keeps
  // the frozen connection) depends on when S0 is answered: on a loaded machine S0 can take
  // past S1's whole limit (S1 is then never sent), or be answered early enough that S1's
  // timeout is not a short one. Such a try proves nothing either way: the scenario is set up
  // again (at most four tries); the renewal after it is judged on the first try that reached
  // the premise, by its own limit as before.
  it('after a short timeout on a dead own connection, the next renewal is answered within its limit', async () => {
    const tries: Record<string, unknown>[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await scenario();
      tries.push(r);
      console.log('pgrev25 own kept', r);
      if (/^ok /.test(r.s0r) && /Query read timeout/.test(r.s1r) && r.keptAfterS1) {
        expect(r.s3).toMatch(/^ok /);
        expect(r.s2).toMatch(/^ok /);
        return;
      }
    }
    expect.fail(`the premise was never reached: ${JSON.stringify(tries)}`);
  }, 60_000);
});
