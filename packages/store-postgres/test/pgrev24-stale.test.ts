import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { harness, msOf, q, type Step, settle } from './pgrev24-harness.js';

/**
 * pgrev24: the LOSER of a hedge race keeps running after the round ended. Opening #0 stalls
 * (a lost SYN: given up at openMs, 6 s), the hedge #1 opens at once and becomes the own
 * connection. Then that connection's backend is terminated (a failover, a restart, an admin)
 * while #0 is still running. `attempts` still counts #0, so the next round's openings are
 * judged against it: `attempts > 0` is read as "the opening beside me is still running".
 * The pool (max 1) is held by a business transaction throughout: no other route.
 */
async function afterHedgeWon(script: (n: number) => Step) {
  const h = harness({ openMs: 6_000, script });
  await h.admin.connect();
  const business = await h.pool.connect();
  const t0 = performance.now();
  const first = await settle(h.rc.repeatable.query(q(1_500)), t0);
  const killed = await h.killOwn();
  return { h, business, first, killed };
}

describe('pgrev24: a stale opening from the previous round', () => {
  // Was FINDING (LOW), fixed: when an opening wins, the other running one is given up at once (its connection destroyed), and hedge() requires fewer than two openings running: "at most two openings at a time" does not hold: hedge() checks only that the current opening was not hedged yet, not `attempts`, and a round's stalled loser keeps running (up to openMs) after its hedge won. Three rounds of "first stalls, hedge wins, its backend is killed" within openMs: 4 openings running at once (maxRunning 4 = the stale #0 and #2, the round's #4 and its hedge #5; expected ≤ 2). Each further round adds one (the random stress saw 4 as well).
  it('after the hedge won and its connection died, three rounds: at most two openings run at once', async () => {
    const { h, business, first, killed } = await afterHedgeWon((n) =>
      n % 2 === 0 ? 'stall' : 'pass',
    );
    try {
      const rounds = [first];
      const kills = [killed];
      for (let round = 0; round < 2; round++) {
        const t0 = performance.now();
        rounds.push(await settle(h.rc.repeatable.query(q(1_500)), t0));
        if (round === 0) kills.push(await h.killOwn());
      }
      console.log('pgrev24 stale rounds', { rounds, kills }, h.stats);
      for (const r of rounds) expect(r).toMatch(/^ok /);
      expect(kills).toEqual([1, 1]);
      expect(h.stats.maxRunning).toBeLessThanOrEqual(2);
    } finally {
      business.release();
      await h.end();
    }
  }, 12_000);

  it('control (no stale opening): a refused opening fails the statement waiting for it at once', async () => {
    const { h, business, first, killed } = await afterHedgeWon((n) => (n === 0 ? 'pass' : 'fail'));
    try {
      const t0 = performance.now();
      const second = await settle(h.rc.repeatable.query(q(3_000)), t0);
      console.log('pgrev24 stale control', { first, killed, second }, h.stats);
      expect(first).toMatch(/^ok /);
      expect(killed).toBe(1);
      expect(second).toMatch(/ECONNREFUSED/);
      expect(msOf(second)).toBeLessThan(300);
    } finally {
      business.release();
      await h.end();
    }
  }, 12_000);

  // Was FINDING (MEDIUM), fixed: when an opening wins, the other running one is given up at once (its connection destroyed), and hedge() requires fewer than two openings running: a refused opening no longer fails the statement that was waiting for it while the previous round's loser (#0) still runs: `attempts > 0` swallows the failure (no statement failed, no dispatch, `opening` left undefined). The statement is re-opened only when the wake timer fires at its stall points (#3 at ~1 s, #4 at ~2 s) and fails at its limit, unsent: NotSentError at ~3000 ms instead of ECONNREFUSED at ~0 ms (control above), after 4-5 openings for that one statement (the README: at most two, three with a hedge). The engine's renewal loop is blind for the whole limit instead of retrying at once.
  it('with the stale loser running: a refused opening still fails its statement at once', async () => {
    const { h, business, first, killed } = await afterHedgeWon((n) =>
      n === 0 ? 'stall' : n === 1 ? 'pass' : 'fail',
    );
    try {
      const before = h.stats.openings;
      const t0 = performance.now();
      const second = await settle(h.rc.repeatable.query(q(3_000)), t0);
      console.log('pgrev24 stale swallowed', { first, killed, second }, h.stats, {
        openingsForSecond: h.stats.openings - before,
        failures: h.inner.failures,
      });
      expect(first).toMatch(/^ok /);
      expect(killed).toBe(1);
      expect(second).toMatch(/ECONNREFUSED/);
      expect(msOf(second)).toBeLessThan(300);
    } finally {
      business.release();
      await h.end();
    }
  }, 12_000);

  it('control (no stale opening): executions beginning against a refusing server are backed off', async () => {
    const { h, business, killed } = await afterHedgeWon((n) => (n === 0 ? 'pass' : 'fail'));
    try {
      const before = h.stats.openings;
      for (let i = 0; i < 40; i++) {
        h.rc.use()();
        await sleep(25);
      }
      const storm = h.stats.openings - before;
      console.log('pgrev24 backoff control', { killed, storm, failures: h.inner.failures });
      expect(killed).toBe(1);
      expect(storm).toBeLessThanOrEqual(6);
      expect(h.inner.failures).toBeGreaterThanOrEqual(3);
    } finally {
      business.release();
      await h.end();
    }
  }, 12_000);

  // Was FINDING (MEDIUM), fixed: when an opening wins, the other running one is given up at once (its connection destroyed), and hedge() requires fewer than two openings running: the back-off is disabled while the previous round's loser (#0) still runs: every refused opening sees `attempts > 0`, so `failures`/`quietUntil` are never set and each execution that begins opens again. 40 executions beginning over ~1 s made 40 connection attempts to a refusing server (control: ≤ 6), failures stayed 0. After a hedge won, that lasts up to openMs (max(statement limit, lease)) after the server started refusing: exactly the restart/failover window the back-off is for.
  it('with the stale loser running: executions beginning against a refusing server are backed off', async () => {
    const { h, business, killed } = await afterHedgeWon((n) =>
      n === 0 ? 'stall' : n === 1 ? 'pass' : 'fail',
    );
    try {
      const before = h.stats.openings;
      for (let i = 0; i < 40; i++) {
        h.rc.use()();
        await sleep(25);
      }
      const storm = h.stats.openings - before;
      console.log('pgrev24 backoff stale', { killed, storm, failures: h.inner.failures });
      expect(killed).toBe(1);
      expect(storm).toBeLessThanOrEqual(6);
    } finally {
      business.release();
      await h.end();
    }
  }, 12_000);
});
