import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { runStatement } from '../src/pg-call.js';
import { RenewalConnection } from '../src/renewal-connection.js';
import { DATABASE_URL } from './pg-env.js';

/**
 * pgrev21: openings of the own connection per statement (c26a605). A pool whose `onConnect`
 * hook stalls `ms` then fails (a server that answers the set-up late and badly), statements
 * arriving together: each statement must see at most two openings (the one it found running
 * and its own), and settle within its limit plus one opening.
 */
function stallingPool(ms: number, fail: (n: number) => boolean) {
  const seen = { openings: 0, log: [] as { n: number; start: number; end: number }[] };
  const pool = new pg.Pool({
    connectionString: DATABASE_URL,
    max: 1,
    onConnect: async (client: pg.ClientBase) => {
      // The own connection's openings only (its statement_timeout is the store's 2 s): a pool
      // connection grown for a waiting statement is not an opening of it.
      const params = (
        client as unknown as { connectionParameters: { statement_timeout?: unknown } }
      ).connectionParameters;
      if (params.statement_timeout !== 2_000) {
        await sleep(ms);
        throw new Error('pool set-up fails');
      }
      const n = ++seen.openings;
      const start = performance.now();
      await sleep(ms);
      seen.log.push({ n, start, end: performance.now() });
      if (fail(n)) throw new Error(`set-up ${n} fails`);
    },
  } as pg.PoolConfig);
  pool.on('error', () => {});
  return { pool, seen };
}

interface Outcome {
  at: number;
  ended: number;
  ok: boolean;
  error?: string;
}

async function burst(count: number, limitMs: number, stallMs: number) {
  const { pool, seen } = stallingPool(stallMs, () => true);
  const rc = new RenewalConnection(pool, 2_000, 2_000);
  // Every set-up fails, so the pool never has an idle connection: only the own one.
  const done = rc.use(); // opening 1 begins now
  await sleep(20);
  const outcomes: Outcome[] = [];
  const runs: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const at = performance.now();
    const openingsBefore = seen.openings;
    runs.push(
      runStatement(rc, `s${i}`, { text: `SELECT ${i} AS i` }, limitMs).then(
        () => {
          outcomes[i] = { at, ended: performance.now(), ok: true };
        },
        (error: unknown) => {
          outcomes[i] = {
            at,
            ended: performance.now(),
            ok: false,
            error: `${(error as Error).name}: ${(error as Error).message} (openings before ${openingsBefore}, after ${seen.openings})`,
          };
        },
      ),
    );
    await sleep(5);
  }
  await Promise.all(runs);
  done();
  await pool.end();
  return { outcomes, seen };
}

describe('pgrev21: openings per statement', () => {
  // FIXED (was FINDING LOW): statements that arrive together during one opening get openings one after another (one per statement), so with a stalling set-up s2..s4 saw 3 openings and timed out at their limit without an opening of their own (total openings stay one per statement).
  it('five statements that arrive during one stalled opening: each sees at most two openings of its own (three with a second opening beside)', async () => {
    const stallMs = 300;
    // Two openings (the one running, the statements' own) end ~0.6 s in, plus two real
    // connects to the server: with a 1 s limit, CI at load 25 reached the limit first (s0..s2
    // unsent at 1.0-1.06 s, 'set-up 2 fails' for s3, s4). The serial openings this guards
    // against give s2 four openings by ~1.2 s (the count below fails it) whatever the limit.
    const limitMs = 2_000;
    const { outcomes, seen } = await burst(5, limitMs, stallMs);
    const starts = seen.log.map((o) => o.start);
    const perStatement = outcomes.map(
      (o) => starts.filter((s) => s + stallMs > o.at && s < o.ended).length,
    );
    console.log('pgrev21 openings', seen.openings, 'per statement', perStatement);
    console.log(outcomes.map((o) => `${Math.round(o.ended - o.at)}ms ${o.error ?? 'ok'}`));
    // Never past its limit by more than one opening.
    for (const o of outcomes) expect(o.ended - o.at).toBeLessThan(limitMs + stallMs + 100);
    // Every statement failed with the opening's reason (its own attempt), not unsent.
    for (const o of outcomes) expect(o.error ?? '').toMatch(/set-up \d+ fails/);
    // The one it found running and its own; a third when a second opening ran beside a
    // stalling one (the pool at max: its one connection grown for another statement).
    for (const n of perStatement) expect(n).toBeLessThanOrEqual(3);
  });
});
