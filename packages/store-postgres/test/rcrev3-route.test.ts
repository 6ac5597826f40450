import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { terminationOf } from '../src/business-transaction.js';
import { runStatement } from '../src/pg-call.js';
import { RenewalConnection } from '../src/renewal-connection.js';
import { DATABASE_URL, makePool, randomName, sleep } from './pg-env.js';
import { localPortOf } from './rcrev2-proxy.js';
import { startRcrev3Proxy } from './rcrev3-proxy.js';

/**
 * rcrev3: adversarial review (third round) of RenewalConnection's routes (164c1c3), at the
 * class's level: the termination (sent once), the `growing` count, and a statement sent again.
 */
const schema = inject('pgSchema');
const counter = `"${schema}".${randomName('rcrev3_sent')}`;
const raw = makePool({ max: 3 });

beforeAll(async () => {
  await raw.query(`CREATE TABLE IF NOT EXISTS ${counter} (round int NOT NULL, kind text NOT NULL)`);
});
afterAll(() => raw.end());

type Idle = { _idle: { client: unknown }[] };
const idleClients = (pool: pg.Pool) => (pool as unknown as Idle)._idle.map((i) => i.client);

describe('rcrev3: renewal routes', () => {
  // FIXED (the termination names the transaction's id too, so it is sent again like a
  // renewal: terminationOf). FINDING (MEDIUM): the max-hold termination is lost when, at that instant, the own
  // connection is busy for a few ms and the pool has an idle connection whose flow went stale:
  // route 2 sends the (non-repeatable) `pg_terminate_backend` there, it is never re-sent, and
  // the own connection that frees 100 ms later is never tried. Repro: pool via a proxy, own
  // connection warm; one pool connection idle, its flow frozen; the own connection busy with a
  // 100 ms statement; `SELECT pg_terminate_backend(victim)` sent with a 1 s limit, the victim a
  // backend running `pg_sleep(4)` (the operation's long statement that the termination exists
  // to end). The termination fails at its limit, the victim runs its 4 s: the maximum hold is
  // not enforced while the statement runs, the row stays locked, no takeover. Why it matters:
  // the README promises the max hold ends a running statement; an idle pool connection a NAT
  // dropped is exactly what route 2's hedge was added for, and the termination is the one
  // statement without the hedge. Suggested fix: make the termination repeatable, guarded
  // against pid reuse (`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1
  // AND backend_start = $2`, the backend_start read at BEGIN), and hedge it like a renewal;
  // or send it only on the own connection (queue it there: its statements are short).
  it('a termination reaches its backend although an idle pool connection is stale', async () => {
    const proxy = await startRcrev3Proxy();
    const pool = new pg.Pool({ connectionString: proxy.url, max: 4, idleTimeoutMillis: 0 });
    pool.on('error', () => {});
    const rc = new RenewalConnection(pool, 3_000, 1_000);
    const unused = rc.use();
    const victim = new pg.Client({ connectionString: DATABASE_URL });
    victim.on('error', () => {});
    try {
      await runStatement(rc, 'warm', { text: 'SELECT 1' }, 1_000);
      const stale = await pool.connect();
      stale.release();
      for (const c of idleClients(pool)) proxy.freeze(localPortOf(c));
      await victim.connect();
      const pid = (victim as unknown as { processID: number }).processID;
      // The transaction the termination names (as the engine's business transaction does).
      await victim.query('BEGIN');
      const xid = String((await victim.query('SELECT txid_current() AS x')).rows[0].x);
      const started = performance.now();
      let victimEndedAt: number | undefined;
      const running = victim.query('SELECT pg_sleep(4)').then(
        () => {
          victimEndedAt = performance.now();
        },
        () => {
          victimEndedAt = performance.now();
        },
      );
      await sleep(50);
      const busy = runStatement(rc, 'warm', { text: 'SELECT pg_sleep(0.1)' }, 1_000);
      const termination = runStatement(rc.repeatable, 'abort', terminationOf(pid, xid), 1_000).then(
        () => 'answered',
        (error: unknown) => (error as Error).message.slice(0, 80),
      );
      await busy;
      const outcome = await termination;
      await Promise.race([running, sleep(4_500)]);
      const victimMs = victimEndedAt === undefined ? undefined : victimEndedAt - started;
      console.info('termination on a stale idle pool connection', {
        outcome,
        victimEndedAfterMs: victimMs === undefined ? undefined : Math.round(victimMs),
      });
      // Ended by the termination: well before its 4 s sleep.
      expect(victimMs).toBeDefined();
      expect(victimMs as number).toBeLessThan(2_000);
    } finally {
      unused();
      await victim.end().catch(() => {});
      proxy.close();
      void pool.end().catch(() => {});
    }
  });

  // FINDING (LOW): a background pool connection that never opens (pool
  // `connectionTimeoutMillis: 0`, node-postgres' default, and a server or balancer that
  // accepts and stays silent for a while) keeps `growing` counted forever: after the silence
  // ends, a statement waiting for the busy own connection gets no new pool connection any more
  // (`growing < waiting.length` is false with one waiting), although the pool has room and new
  // connections open at once; it waits for the own connection instead. The hung connect also
  // keeps one pool slot forever. Repro: pool (max 4) via a proxy, own connection warm, one pool
  // connection checked out; new connections then silent; own busy 300 ms, one statement
  // waiting (growth starts, hangs); silence ends; own busy 600 ms again, one statement
  // waiting: it lands after ~600 ms, where before the hang it landed in a few ms. Why it
  // matters: one silent episode disables route 3 for the engine's lifetime (each further one
  // one more slot). Suggested fix: bound the background connect by `openMs` for the
  // count (stop counting it as growing when its time passed, as the own connection's opening
  // is bounded), or skip growth when the pool has no `connectionTimeoutMillis`.
  it('a background pool connection that never opens does not disable the growth for good', async () => {
    const proxy = await startRcrev3Proxy();
    const pool = new pg.Pool({ connectionString: proxy.url, max: 4 });
    pool.on('error', () => {});
    const held = await pool.connect();
    const rc = new RenewalConnection(pool, 3_000, 2_000);
    const unused = rc.use();
    try {
      await runStatement(rc, 'warm', { text: 'SELECT 1' }, 2_000);
      // Control: growth works; a statement behind a busy own connection lands at once.
      const busy0 = runStatement(rc, 'warm', { text: 'SELECT pg_sleep(0.6)' }, 2_000);
      let t = performance.now();
      await runStatement(rc.repeatable, 'renewHeld', { text: 'SELECT 1' }, 2_000);
      const before = performance.now() - t;
      await busy0;
      // The pool's grown connection goes: a silent episode for new connections.
      await pool.connect().then((c) => c.release(new Error('dropped')));
      proxy.state.silentNew = true;
      const busy1 = runStatement(rc, 'warm', { text: 'SELECT pg_sleep(0.3)' }, 2_000);
      await runStatement(rc.repeatable, 'renewHeld', { text: 'SELECT 1' }, 2_000);
      await busy1;
      proxy.state.silentNew = false;
      const totalAfterSilence = pool.totalCount;
      const busy2 = runStatement(rc, 'warm', { text: 'SELECT pg_sleep(0.6)' }, 2_000);
      t = performance.now();
      await runStatement(rc.repeatable, 'renewHeld', { text: 'SELECT 1' }, 2_000);
      const after = performance.now() - t;
      await busy2;
      console.info('growth after a hung background connect', {
        beforeMs: Math.round(before),
        afterMs: Math.round(after),
        totalAfterSilence,
        totalNow: pool.totalCount,
      });
      expect(before).toBeLessThan(400);
      expect(after).toBeLessThan(400);
    } finally {
      unused();
      held.release();
      proxy.close();
      void pool.end().catch(() => {});
    }
  });

  // FINDING (LOW): a renewal sent again (its pool connection stale) waits for the own
  // connection only, even when a pool connection opened for it in the background (route 3,
  // known alive: it just opened) is idle; the statements queued behind it wait too (the queue
  // stops at its head). Repro: own connection busy with an 800 ms statement (a slow server),
  // one idle pool connection, its flow frozen; a renewal (limit 900 ms) goes there, is sent
  // again after 300 ms; a fresh pool connection opens in the background for it and sits idle;
  // the renewal lands only when the own connection frees (~800 ms), where the fresh one would
  // have answered at ~310 ms. Why it matters: with a slow own statement the renewal lands late
  // or not at all (own connection silent: it waits the busy statement's whole limit).
  // Suggested fix: let a statement sent again take a pool connection opened by the growth (or
  // one that answered since), only not the idle ones of unknown health.
  it('a renewal sent again takes a pool connection opened for it in the background', async () => {
    const proxy = await startRcrev3Proxy();
    const pool = new pg.Pool({ connectionString: proxy.url, max: 4, idleTimeoutMillis: 0 });
    pool.on('error', () => {});
    const rc = new RenewalConnection(pool, 3_000, 1_000);
    const unused = rc.use();
    try {
      await runStatement(rc, 'warm', { text: 'SELECT 1' }, 1_000);
      const stale = await pool.connect();
      stale.release();
      for (const c of idleClients(pool)) proxy.freeze(localPortOf(c));
      const busy = runStatement(rc, 'warm', { text: 'SELECT pg_sleep(0.8)' }, 1_000);
      const started = performance.now();
      const renewal = runStatement(rc.repeatable, 'renewHeld', { text: 'SELECT 2 AS n' }, 900);
      await sleep(500);
      const idleMeanwhile = pool.idleCount;
      await renewal;
      const landed = performance.now() - started;
      await busy;
      console.info('sent again, grown pool connection idle', {
        landedMs: Math.round(landed),
        idleMeanwhile,
      });
      expect(idleMeanwhile).toBe(1);
      expect(landed).toBeLessThan(600);
    } finally {
      unused();
      proxy.close();
      void pool.end().catch(() => {});
    }
  });

  // Held: a statement sent once is never sent twice, a repeatable one at most twice, across
  // 16 rounds alternating: own connection free; own busy with an idle pool connection whose
  // flow is stalled (its bytes delivered 1.5 s later, after the statement's limit: the late
  // copy reaches the server); own busy and pool full (growth). Each statement inserts a row.
  it('a termination is never sent twice and a renewal at most twice, late copies included', async () => {
    const proxy = await startRcrev3Proxy();
    const pool = new pg.Pool({ connectionString: proxy.url, max: 3, idleTimeoutMillis: 0 });
    pool.on('error', () => {});
    const rc = new RenewalConnection(pool, 3_000, 1_000);
    const unused = rc.use();
    const stalledPorts: number[] = [];
    const outcomes: string[] = [];
    try {
      await runStatement(rc, 'warm', { text: 'SELECT 1' }, 1_000);
      for (let round = 0; round < 16; round++) {
        const mode = round % 3;
        const checkedOut: pg.PoolClient[] = [];
        if (mode === 1) {
          const c = await pool.connect();
          c.release();
          for (const idle of idleClients(pool)) {
            const p = localPortOf(idle);
            proxy.stall(p);
            stalledPorts.push(p);
          }
        } else if (mode === 2) {
          while (pool.totalCount < 3) checkedOut.push(await pool.connect());
          while (pool.idleCount > 0) checkedOut.push(await pool.connect());
        }
        const busy =
          mode === 0
            ? Promise.resolve()
            : runStatement(rc, 'warm', { text: 'SELECT pg_sleep(0.15)' }, 1_000).then(() => {});
        const kinds = ['once', 'again'] as const;
        const sent = kinds.map((kind) =>
          runStatement(
            kind === 'once' ? rc : rc.repeatable,
            kind === 'once' ? 'abort' : 'renewHeld',
            { text: `INSERT INTO ${counter} (round, kind) VALUES ($1, $2)`, values: [round, kind] },
            600,
          ).then(
            () => `${mode}:${kind}:ok`,
            () => `${mode}:${kind}:failed`,
          ),
        );
        outcomes.push(...(await Promise.all(sent)));
        await busy;
        for (const c of checkedOut) c.release();
      }
      // The stalled copies reach the server now, long after their limits.
      for (const p of stalledPorts) proxy.unstall(p);
      await sleep(1_500);
      const { rows } = await raw.query(
        `SELECT round, kind, count(*)::int AS n FROM ${counter} GROUP BY round, kind`,
      );
      const once = rows.filter((r) => r.kind === 'once').map((r) => r.n as number);
      const again = rows.filter((r) => r.kind === 'again').map((r) => r.n as number);
      console.info('sent once / at most twice', {
        stalled: stalledPorts.length,
        onceMax: Math.max(...once),
        againMax: Math.max(...again),
        againTwice: again.filter((n) => n === 2).length,
        failed: outcomes.filter((o) => o.endsWith('failed')),
      });
      expect(Math.max(...once)).toBe(1);
      expect(Math.max(...again)).toBeLessThanOrEqual(2);
      // Every repeatable statement landed (the hedge), whatever the route.
      expect(outcomes.filter((o) => o.includes(':again:failed'))).toEqual([]);
    } finally {
      unused();
      proxy.close();
      void pool.end().catch(() => {});
    }
  });
});

describe('rcrev3: growth and the pool', () => {
  // Held: bursts of twelve repeatable statements while the own connection is busy with a
  // 300 ms statement and the pool (max 3) has two connections checked out by "business
  // transactions"; meanwhile a business transaction asks the pool for a connection. Five
  // rounds. The pool never exceeds its max (sampled every 5 ms), every statement lands, the
  // business transaction gets its connection within 1 s each round (our background
  // connection goes to it first), and nothing is left growing: after the rounds, with the
  // business connections back, the pool holds at most its max and no one waits.
  it('growth stays within the pool max and hands its connection to a waiting business transaction', async () => {
    const pool = makePool({ max: 3, idleTimeoutMillis: 0 });
    const rc = new RenewalConnection(pool, 3_000, 2_000);
    const unused = rc.use();
    let maxTotal = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        maxTotal = Math.max(maxTotal, pool.totalCount);
        await sleep(5);
      }
    })();
    const businessWaits: number[] = [];
    let failed = 0;
    try {
      await runStatement(rc, 'warm', { text: 'SELECT 1' }, 2_000);
      for (let round = 0; round < 5; round++) {
        const business = [await pool.connect(), await pool.connect()];
        const busy = runStatement(rc, 'warm', { text: 'SELECT pg_sleep(0.3)' }, 2_000);
        const burst = Array.from({ length: 12 }, () =>
          runStatement(rc.repeatable, 'renewHeld', { text: 'SELECT pg_sleep(0.01)' }, 2_000).then(
            () => {},
            () => {
              failed++;
            },
          ),
        );
        const asked = performance.now();
        const third = await pool.connect();
        businessWaits.push(performance.now() - asked);
        await Promise.all(burst);
        await busy;
        third.release();
        for (const c of business) c.release();
      }
      await sleep(100);
      console.info('growth bounds', {
        maxTotal,
        failed,
        businessWaitsMs: businessWaits.map(Math.round),
        total: pool.totalCount,
        waiting: pool.waitingCount,
      });
      expect(maxTotal).toBeLessThanOrEqual(3);
      expect(failed).toBe(0);
      expect(Math.max(...businessWaits)).toBeLessThan(1_000);
      expect(pool.totalCount).toBeLessThanOrEqual(3);
      expect(pool.waitingCount).toBe(0);
    } finally {
      sampling = false;
      await sampler;
      unused();
      await pool.end();
    }
  });
});
