import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { harness, q, settle, until } from './pgrev24-harness.js';

/**
 * pgrev25: the losing opening cancelled at once (676688b) racing its own success. The pool
 * (max 1) is held by a business transaction; an execution holds a record (use()), which
 * begins opening #0; its Client (pgrev24 harness) waits `d` ms before it calls pg's real
 * connect() (a Client class with an asynchronous step first: credentials, a DNS look-up).
 * A renewal (limit 1.5 s) waits; the hedge (#1) begins at ~500 ms (a third of min(1.5 s,
 * openMs)) and opens in ~5-15 ms. Own backends are tagged (application_name).
 */
async function round(d: number) {
  const h = harness({ script: (n) => (n === 0 ? d : 'pass') });
  await h.admin.connect();
  const business = await h.pool.connect();
  const done = h.rc.use();
  try {
    const t0 = performance.now();
    const r = await settle(h.rc.repeatable.query(q(1_500)), t0);
    await until(() => h.stats.running === 0, 2_000);
    await sleep(300);
    const own = await h.backends('own');
    const again = await settle(h.rc.repeatable.query(q(1_000)), performance.now());
    done();
    business.release();
    await Promise.race([h.pool.end(), sleep(2_000)]);
    // The lingering connection notices the ended pool within LINGER_CHECK_MS (200 ms).
    await until(async () => (await h.backends('own')) === 0, 1_000);
    const left = await h.backends('own');
    return {
      d,
      r,
      again,
      own,
      left,
      openings: h.stats.openings,
      balance: h.stats.connectEvents - h.stats.removeEvents,
      failures: h.inner.failures,
      attempts: h.inner.attempts,
      quiet: h.inner.quietUntil,
    };
  } finally {
    await h.admin.end().catch(() => {});
  }
}

describe('pgrev25: the losing opening cancelled as it succeeds', () => {
  it('the first opening wins at the hedge point: one backend, balanced, no back-off', async () => {
    const rounds = [];
    for (const d of [470, 490]) rounds.push(await round(d));
    console.log('pgrev25 cancel first wins', rounds);
    for (const x of rounds) {
      expect(x.r).toMatch(/^ok /);
      expect(x.again).toMatch(/^ok /);
      expect(x.own).toBe(1);
      expect(x.left).toBe(0);
      expect(x.balance).toBe(0);
      expect(x.failures).toBe(0);
      expect(x.attempts).toBe(0);
      expect(x.quiet).toBe(0);
    }
  }, 15_000);

  // Was FINDING (LOW), fixed: a given-up opening's socket is destroyed again when a late connect() revives it: a losing (or timed-out) opening given up BEFORE its Client called pg's
  // connect() (a Client class with an asynchronous step first) has its socket destroyed;
  // when the Client then calls connect(), Node's net.Socket.connect() revives the destroyed
  // socket (`_undestroy()`) and the connection opens: a backend nobody owns. d = 520 / 540:
  // the hedge wins at ~510 ms, #0 is cancelled while in its 520 ms step, then connects:
  // 2 own backends 300 ms after the race (1 expected), and 1 still there after pool.end()
  // (it is never closed: an idle session on the server until the process exits). Fix: when
  // an opening is given up, make a later connect() fail or close at once, e.g.
  // `socket.once('connect', () => socket.destroy())` on the given-up client's stream (or
  // `client.connection.once('connect', ...)`), not only `socket.destroy()` now.
  it('the hedge wins while the first is still before its connect(): no backend left behind', async () => {
    const rounds = [];
    for (const d of [520, 540]) rounds.push(await round(d));
    console.log('pgrev25 cancel hedge wins', rounds);
    for (const x of rounds) {
      expect(x.r).toMatch(/^ok /);
      expect(x.failures).toBe(0);
      expect(x.own).toBe(1);
      expect(x.left).toBe(0);
    }
  }, 15_000);
});
