import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { runStatement } from '../src/pg-call.js';
import { makePool, randomName, sleep } from './pg-env.js';
import { localPortOf, startRcrev2Proxy, withProxiedRenewals } from './rcrev2-proxy.js';
import { insertCharge } from './take-over.js';

/**
 * rcrev2: adversarial review (second round) of RenewalConnection's routing (582d21e): which
 * route a renewal takes (free pool connection / own connection / new pool connection) and
 * what each route costs a healthy owner.
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const heldLeases = `"${schema}"."idem_records_held_leases"`;
const charges = `"${schema}".rcrev2_route_charges`;
const raw = makePool({ max: 3 });

beforeAll(async () => {
  await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
});
afterAll(() => raw.end());

type Engine = ReturnType<typeof createPostgresIdempotency<string>>;

/** An owner holding its record for `holdMs` (idle in its transaction), then returning. */
function holdingOwner(engine: Engine, scope: string, key: string, holdMs: number) {
  const state: {
    storageKey?: string;
    abortedAt?: number;
    result?: unknown;
    error?: unknown;
    holding: boolean;
  } = { holding: false };
  const done = engine
    .execute({ key, scope }, async ({ tx, fence, signal, storageKey }) => {
      state.storageKey = storageKey;
      signal.addEventListener('abort', () => {
        state.abortedAt = performance.now();
      });
      await insertCharge(tx, charges, scope, fence);
      state.holding = true;
      await sleep(holdMs);
      return 'done';
    })
    .then(
      (r) => {
        state.result = r;
      },
      (e: unknown) => {
        state.error = e;
      },
    );
  return { state, done };
}

async function until(check: () => boolean | Promise<boolean>, limitMs: number): Promise<boolean> {
  const end = performance.now() + limitMs;
  while (performance.now() < end) {
    if (await check()) return true;
    await sleep(20);
  }
  return false;
}

const rowsOf = async (scope: string) =>
  (await raw.query(`SELECT fence FROM ${charges} WHERE scope = $1 ORDER BY id`, [scope])).rows.map(
    (r) => Number(r.fence),
  );

type Idle = { _idle: { client: unknown }[] };

describe('rcrev2: renewal routes', () => {
  // FIXED (statements wait for the own connection in order while new pool connections open
  // in the background; the first free one sends). FINDING (MEDIUM): route (3) makes a renewal pay for opening a pool connection inside its
  // time limit, contrary to the README ("no renewal pays for opening a connection in its time
  // limit"). Repro: pool (max 4) with its only connection checked out (idle 0), the renewal
  // connection open and warm; new connections then take 1.5 s (proxy). Three renewal-sized
  // statements sent at once (what the engine's one heartbeat timer does when owners were
  // acquired together): the first goes to the own connection, the two others see it busy and
  // go to pool.query -> a new pool connection -> 1.5 s > the 1 s limit: they fail, while the
  // own connection would have answered all three in a few ms. Why it matters: a healthy
  // owner's renewal fails for nothing; repeated (see the engine test below) its signal aborts.
  // Suggested fix: take route (3) only for a pool connection that is already being opened or
  // free; otherwise queue on the own connection (it is FIFO and its statements are short), or
  // open route (3)'s connection in the background and keep the statement on the own queue
  // until one of the two is ready (first wins).
  it('statements that find the own connection busy are not delayed by opening a pool connection', async () => {
    await withProxiedRenewals(
      { max: 4, holdOne: true, openMs: 3_000, statementMs: 1_000 },
      async ({ proxy, pool, rc }) => {
        proxy.state.delayMs = 1_500;
        const started = performance.now();
        const results = await Promise.allSettled(
          [1, 2, 3].map(() =>
            runStatement(rc, 'renewHeld', { text: 'SELECT pg_sleep(0.02)' }, 1_000),
          ),
        );
        const elapsed = performance.now() - started;
        console.info('route 3 with slow new connections', {
          statuses: results.map((r) => r.status),
          elapsed: Math.round(elapsed),
          totalCount: pool.totalCount,
        });
        expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled']);
      },
    );
  });

  // Held (control): with fast new connections the same three statements all land.
  it('control: the same three statements land when new connections are fast', async () => {
    await withProxiedRenewals(
      { max: 4, holdOne: true, openMs: 3_000, statementMs: 1_000 },
      async ({ rc }) => {
        const results = await Promise.allSettled(
          [1, 2, 3].map(() =>
            runStatement(rc, 'renewHeld', { text: 'SELECT pg_sleep(0.02)' }, 1_000),
          ),
        );
        expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled']);
      },
    );
  });

  // Engine-level consequence of the finding above (see there): six owners holding, pool below
  // its max, idle connections reaped after 200 ms (idleTimeoutMillis), new connections 1.5 s.
  // Not kept as a test: it reproduced in most runs but not all (see the README's known gaps of
  // the routing); an it.fails that passes now and then would fail the suite at random.

  // FIXED (the own connection first when free; a renewal unanswered on a pool connection is
  // sent again on it: see the next test). FINDING (MEDIUM): route (1) prefers an idle pool connection to the engine's own, and a
  // renewal that fails on it (a stale flow: a NAT or load balancer silently dropped it while
  // idle, the client does not know yet) is not retried elsewhere. Repro: pool
  // (idleTimeoutMillis 0, as many production pools) via a proxy; owner A holds (lease 2 s,
  // heartbeat 400 ms, statement limit 500 ms); five more pool connections are then idle and
  // their flows frozen. Every renewal of A takes one of them (route 1), waits its 500 ms, fails
  // (the pool drops that client); core retries 80 ms later on the next stale one... A's lease
  // estimate passes and its signal aborts, although the server, A's transaction and the own
  // renewal connection are all healthy. Suggested fix: when a pool-routed renewal fails without
  // a server answer, send it again on the own connection within what is left of its limit (or
  // route renewals to the own connection first when it is open and free: it is the one
  // connection that is known to be alive, and the pool's idle ones are not).
  it("an owner whose pool's idle connections went stale keeps its lease (the own connection is healthy)", async () => {
    const proxy = await startRcrev2Proxy();
    const pool = makePool({ connectionString: proxy.url, max: 8, idleTimeoutMillis: 0 });
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({
        pool,
        table,
        keyPrefix: randomName('r2stale'),
        statementTimeoutMs: 500,
      }),
      leaseMs: 2_000,
      heartbeatMs: 400,
      maxHoldMs: 60_000,
    });
    const scope = randomName('scope');
    try {
      const a = holdingOwner(engine, scope, 'a', 4_000);
      expect(await until(() => a.state.holding, 5_000)).toBe(true);
      // Five more pool connections, then idle; their flows go stale.
      const extra = await Promise.all([1, 2, 3, 4, 5].map(() => pool.connect()));
      for (const c of extra) c.release();
      const idle = (pool as unknown as Idle)._idle.map((i) => i.client);
      for (const c of idle) proxy.freeze(localPortOf(c));
      await a.done;
      console.info('stale idle pool connections', {
        frozen: idle.length,
        abortedAt: a.state.abortedAt,
        error: (a.state.error as Error | undefined)?.name,
        result: a.state.result,
      });
      expect(a.state.abortedAt).toBeUndefined();
      expect(a.state.result).toEqual({ value: 'done', replayed: false });
      expect(await rowsOf(scope)).toEqual([1]);
    } finally {
      proxy.close();
      void pool.end().catch(() => {});
    }
  });

  // The fix of the finding above, where an owner alone cannot show it: the own connection is
  // busy, so a statement takes an idle pool connection, and that one is stale. A renewal
  // (repeatable) is sent again on the own connection after a third of its limit and lands; a
  // statement sent once (the termination) is not repeated and fails at its limit.
  it('a renewal sent to a stale idle pool connection is sent again on the own connection; a termination is not', async () => {
    await withProxiedRenewals(
      { max: 4, idleTimeoutMillis: 0, holdOne: false, openMs: 3_000, statementMs: 1_000 },
      async ({ proxy, pool, rc }) => {
        const stale = await Promise.all([pool.connect(), pool.connect()]);
        for (const c of stale) c.release();
        for (const c of (pool as unknown as Idle)._idle.map((i) => i.client))
          proxy.freeze(localPortOf(c));
        expect(pool.idleCount).toBe(2);
        // The own connection busy for 200 ms: the next statement takes a stale pool connection.
        const busy = runStatement(rc, 'warm', { text: 'SELECT pg_sleep(0.2)' }, 1_000);
        const started = performance.now();
        const renewal = runStatement(rc.repeatable, 'renewHeld', { text: 'SELECT 2 AS n' }, 900);
        const { rows } = await renewal;
        const renewedAfter = performance.now() - started;
        await busy;
        expect(rows[0]?.n).toBe(2);
        // Sent again after 300 ms (a third of 900), answered at once by the own connection.
        expect(renewedAfter).toBeGreaterThanOrEqual(250);
        expect(renewedAfter).toBeLessThan(900);
        // The same with a statement sent once: it waits on the stale connection to its limit.
        const busyAgain = runStatement(rc, 'warm', { text: 'SELECT pg_sleep(0.2)' }, 1_000);
        expect(pool.idleCount).toBe(1);
        const once = runStatement(rc, 'abort', { text: 'SELECT 3' }, 600);
        await expect(once).rejects.toThrow();
        await busyAgain;
        console.info('stale pool route', { renewedAfter: Math.round(renewedAfter) });
      },
    );
  });

  // Held: one owner's renewals alternating between the pool (idle connections free) and the
  // own connection (pool full) never move its held lease backwards, and it is never aborted.
  it("an owner's held lease never moves backwards while its renewals alternate routes", async () => {
    const pool = makePool({ max: 3 });
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({
        pool,
        table,
        keyPrefix: randomName('r2order'),
        statementTimeoutMs: 1_000,
      }),
      leaseMs: 1_000,
      heartbeatMs: 100,
      maxHoldMs: 60_000,
    });
    const scope = randomName('scope');
    try {
      const a = holdingOwner(engine, scope, 'a', 3_500);
      expect(await until(() => a.state.holding, 5_000)).toBe(true);
      const key = (
        await raw.query(`SELECT key FROM ${heldLeases} WHERE key LIKE '%' || $1`, [
          a.state.storageKey,
        ])
      ).rows[0]?.key as string | undefined;
      let stop = false;
      // Toggles the pool between "two idle" and "full", at a pace unrelated to the heartbeat.
      const toggler = (async () => {
        while (!stop) {
          const taken = await Promise.all([pool.connect(), pool.connect()]);
          await sleep(37);
          for (const c of taken) c.release();
          await sleep(53);
        }
      })();
      const samples: number[] = [];
      const sampler = (async () => {
        while (!stop) {
          const { rows } = await raw.query(
            `SELECT lease_until FROM ${heldLeases} WHERE key LIKE '%' || $1`,
            [a.state.storageKey],
          );
          if (rows[0]) samples.push(Number(rows[0].lease_until));
          await sleep(11);
        }
      })();
      await a.done;
      stop = true;
      await Promise.all([toggler, sampler]);
      const backwards = samples.filter((v, i) => i > 0 && v < samples[i - 1]!).length;
      console.info('alternating routes', {
        key: key !== undefined,
        samples: samples.length,
        backwards,
      });
      expect(backwards).toBe(0);
      expect(samples.length).toBeGreaterThan(50);
      expect(a.state.abortedAt).toBeUndefined();
      expect(a.state.result).toEqual({ value: 'done', replayed: false });
    } finally {
      await pool.end();
    }
  });
});
