/**
 * rv21: adversarial review of lease21's final writes on the renewal route (the plain store's
 * `complete` and `release` take it when the pool cannot hand out a connection at once; sent
 * once; sent again through the pool's queue when the route fails without the server's answer).
 * A table of the file's own and a role limited to 2 connections (the server's connection
 * limit); rows read through a pool of their own (not the adapter).
 */
import { StoreUnavailableError } from '@idem/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PostgresServer, startPostgres } from '../../../apps/chaos/src/postgres-server.js';
import { createPostgresStore, recommendedPoolConfig } from '../src/index.js';
import { runExitChild } from './exit-child-run.js';
import { DATABASE_URL, makePool, randomName, sleep } from './pg-env.js';
import { useTable } from './rev20b-env.js';

const own = useTable('rv21f', 2);
const TABLE = own.table;
const pools: pg.Pool[] = [];
afterAll(async () => {
  for (const pool of pools) await pool.end().catch(() => {});
});

/** A pool of `max` (as the limited role when `asRole`) whose app statements may take 10 s. */
function poolOf(max: number, app: string, asRole = false): pg.Pool {
  const url = new URL(DATABASE_URL);
  if (asRole) url.username = own.role;
  const pool = makePool({
    connectionString: url.toString(),
    max,
    application_name: app,
    statement_timeout: 10_000,
    query_timeout: 10_000,
  } as pg.PoolConfig);
  pools.push(pool);
  return pool;
}

/** A store on `pool` with its own key prefix; `lease(key)` acquires a 30 s lease. */
function storeOn(pool: pg.Pool, statementTimeoutMs: number) {
  const prefix = randomName('rv21');
  const store = createPostgresStore({ pool, table: TABLE, keyPrefix: prefix, statementTimeoutMs });
  const lease = async (key: string) => {
    const input = { key, owner: randomName('o'), leaseMs: 30_000, retentionMs: 60_000 };
    expect((await store.acquire({ ...input, fingerprint: 'f' })).kind).toBe('acquired');
    return input;
  };
  return { store, prefix, lease };
}

const outcome = (text: string) => new TextEncoder().encode(text);

/** The row read through another pool: status, owner and outcome text. */
async function rowOf(rowKey: string) {
  const { rows } = await own.admin.query(
    `SELECT status, owner, convert_from(outcome, 'UTF8') AS outcome FROM ${TABLE} WHERE key = $1`,
    [rowKey],
  );
  return rows[0] as { status: string; owner: string; outcome: string | null } | undefined;
}

/** Every connection of `pool` busy for `ms` (no statement waits: the pool is just full). */
function occupy(pool: pg.Pool, max: number, ms: number): Promise<unknown> {
  return Promise.all(
    Array.from({ length: max }, () => pool.query('SELECT pg_sleep($1)', [ms / 1000])),
  );
}

/** A transaction of another session that holds the row's lock until `unlock()`. */
async function lockRow(rowKey: string): Promise<{ unlock(): Promise<void> }> {
  const locker = makePool({ max: 1 });
  pools.push(locker);
  const client = await locker.connect();
  await client.query('BEGIN');
  await client.query(`SELECT 1 FROM ${TABLE} WHERE key = $1 FOR UPDATE`, [rowKey]);
  return {
    async unlock() {
      await client.query('ROLLBACK');
      client.release();
    },
  };
}

/** Waits (5 s at most) until no session waits for a row lock of this file's table. */
async function waitNoLockWaiters(): Promise<void> {
  const until = performance.now() + 5_000;
  for (;;) {
    const { rows } = await own.admin.query(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1`,
      [`%${TABLE}%`],
    );
    if ((rows[0] as { n: number }).n === 0) return;
    if (performance.now() > until)
      throw new Error('a statement still waits for the row lock after 5 s');
    await sleep(20);
  }
}

/**
 * `lease`'s completion with `text` while another session holds its row's lock and the pool's
 * one connection is busy for `busyMs`: it takes the route and waits there for the lock.
 */
async function completeBehindLock(
  s: ReturnType<typeof storeOn>,
  pool: pg.Pool,
  lease: Awaited<ReturnType<ReturnType<typeof storeOn>['lease']>>,
  text: string,
  busyMs: number,
) {
  const lock = await lockRow(`${s.prefix}${lease.key}`);
  const busy = occupy(pool, 1, busyMs);
  await sleep(30);
  const completing = s.store
    .complete({ ...lease, outcome: outcome(text) })
    .catch((error: unknown) => error);
  return { lock, busy, completing };
}

describe('rv21: final writes on the renewal route', () => {
  it('held: a completion blocked on a row lock holds the route one statement limit at most: a renewal queued behind it still lands; the completion fails typed, is not sent again, and a retry later completes once', async () => {
    const pool = poolOf(1, randomName('rv21a'));
    const s = storeOn(pool, 800);
    const { store, prefix } = s;
    const k1 = await s.lease('k1');
    const k2 = await s.lease('k2');
    const { lock, busy, completing } = await completeBehindLock(s, pool, k1, 'one', 1_500);
    await sleep(150);
    // Queued behind the blocked completion on the route (the pool is full): it lands within
    // its own 800 ms limit, counted from this call (an ok answer is one that came in time).
    const renewed = await store.extend({ ...k2 });
    const completed = await completing;
    expect(renewed.ok).toBe(true);
    expect(completed).toBeInstanceOf(StoreUnavailableError);
    // The client gives up at 800 ms from its call; the server's statement_timeout counts from
    // when the statement arrived, a little later (under CI load up to a few hundred ms). A lock
    // released in between lets the cancelled-on-the-client completion commit, which is what an
    // ambiguous StoreUnavailableError allows (seen once in CI). Released once no statement waits
    // on the row, a completion that landed now would be one sent again.
    await waitNoLockWaiters();
    await lock.unlock();
    expect((await rowOf(`${prefix}k1`))?.status).toBe('in_progress');
    await busy;
    expect(await store.complete({ ...k1, outcome: outcome('one') })).toEqual({ ok: true });
    expect(await rowOf(`${prefix}k1`)).toMatchObject({ status: 'completed', outcome: 'one' });
  });

  it('held: the route connection terminated while the completion waits (no answer): sent again through the pool queue, committed once, answered ok', async () => {
    const app = randomName('rv21b');
    const pool = poolOf(1, app);
    const s = storeOn(pool, 3_000);
    const { store, prefix } = s;
    const k1 = await s.lease('k1');
    // The pool's one connection busy for 700 ms: the completion takes the route and waits
    // there for the row lock.
    const { lock, busy, completing } = await completeBehindLock(s, pool, k1, 'once', 700);
    // Its backend, waiting for the lock: the store's own connection (the app's name).
    let pid: number | undefined;
    for (let i = 0; i < 40 && pid === undefined; i++) {
      await sleep(25);
      const { rows } = await own.admin.query(
        `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`,
        [app],
      );
      pid = rows[0]?.pid as number | undefined;
    }
    expect(pid).toBeDefined();
    await own.admin.query('SELECT pg_terminate_backend($1)', [pid]);
    await lock.unlock();
    const completed = await completing;
    await busy;
    expect(completed).toEqual({ ok: true });
    expect(await rowOf(`${prefix}k1`)).toMatchObject({
      status: 'completed',
      owner: k1.owner,
      outcome: 'once',
    });
    // Redelivered by the same owner: recognised; by another owner: refused.
    expect(await store.complete({ ...k1, outcome: outcome('once') })).toEqual({ ok: true });
    expect(
      await store.complete({ ...k1, owner: 'somebody-else', outcome: outcome('other') }),
    ).toEqual({ ok: false, reason: 'not_owner' });
    expect((await rowOf(`${prefix}k1`))?.outcome).toBe('once');
  });

  it('held: at the connection limit (the role has 2, the pool holds both) the route cannot open: the completion waits in the pool queue and lands once a connection frees', async () => {
    const pool = poolOf(2, randomName('rv21c'), true);
    const { store, prefix, lease } = storeOn(pool, 2_000);
    const k1 = await lease('k1');
    const busy = occupy(pool, 2, 300);
    await sleep(50);
    expect(pool.idleCount + pool.waitingCount).toBe(0);
    const completed = await store
      .complete({ ...k1, outcome: outcome('at-limit') })
      .catch((error: unknown) => error);
    await busy;
    expect(completed).toEqual({ ok: true });
    expect(await rowOf(`${prefix}k1`)).toMatchObject({ status: 'completed', outcome: 'at-limit' });
  });

  it('held: six stores on one saturated pool: every completion and release lands once, through one shared route connection', async () => {
    const app = randomName('rv21d');
    const pool = poolOf(1, app);
    const stores = Array.from({ length: 6 }, () => storeOn(pool, 1_500));
    const leases = await Promise.all(stores.map((s) => s.lease('k')));
    const busy = occupy(pool, 1, 800);
    await sleep(30);
    let most = 0;
    const watching = (async () => {
      for (let i = 0; i < 20; i++) {
        const { rows } = await own.admin.query(
          'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
          [app],
        );
        most = Math.max(most, rows[0].n as number);
        await sleep(20);
      }
    })();
    const answers = await Promise.all(
      stores.map((s, i) =>
        i % 2 === 0
          ? s.store.complete({ ...leases[i]!, outcome: outcome(`v${i}`) })
          : s.store.release({ ...leases[i]! }),
      ),
    );
    await watching;
    await busy;
    expect(answers).toEqual(stores.map(() => ({ ok: true })));
    for (const [i, s] of stores.entries())
      expect((await rowOf(`${s.prefix}k`))?.status).toBe(i % 2 === 0 ? 'completed' : 'released');
    // The pool's one connection and one of the stores' own (shared by pool and limit).
    expect(most).toBeLessThanOrEqual(2);
  });

  it('held: renewals do not starve a completion: 60 renewals queued at once and more every 20 ms, the completion queued behind them still lands within its limit', async () => {
    const pool = poolOf(1, randomName('rv21g'));
    const s = storeOn(pool, 1_500);
    const leases = await Promise.all(Array.from({ length: 60 }, (_, i) => s.lease(`r${i}`)));
    const last = await s.lease('final');
    const busy = occupy(pool, 1, 1_200);
    await sleep(30);
    const renewing = leases.map((lease) => s.store.extend(lease));
    const completing = s.store.complete({ ...last, outcome: outcome('through') });
    // A steady stream of renewals behind it as well (each goes ahead of the completion).
    const more: Promise<{ ok: boolean }>[] = [];
    for (let i = 0; i < 25; i++) {
      more.push(s.store.extend(leases[i % leases.length]!));
      await sleep(20);
    }
    expect(await completing).toEqual({ ok: true });
    expect((await Promise.all([...renewing, ...more])).every((r) => r.ok)).toBe(true);
    await busy;
    expect((await rowOf(`${s.prefix}final`))?.status).toBe('completed');
  });

  it('held: after pool.end() a completion is refused typed, opens no connection and writes nothing', async () => {
    const app = randomName('rv21e');
    const pool = poolOf(1, app);
    const { store, prefix, lease } = storeOn(pool, 1_000);
    const k1 = await lease('k1');
    await pool.end();
    const { rows: at } = await own.admin.query('SELECT clock_timestamp() AS t');
    const completed = await store
      .complete({ ...k1, outcome: outcome('late') })
      .catch((error: unknown) => error);
    expect(completed).toBeInstanceOf(StoreUnavailableError);
    expect((await rowOf(`${prefix}k1`))?.status).toBe('in_progress');
    // No connection of the app opened since the end (the pool's own may still be closing).
    const { rows } = await own.admin.query(
      'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND backend_start >= $2',
      [app, at[0].t],
    );
    expect(rows[0].n).toBe(0);
  });

  it('held: a process whose completion took the route exits promptly once idle (allowExitOnIdle, no pool.end)', async () => {
    const r = await runExitChild('./rv21-exit-child.ts', [DATABASE_URL, TABLE]);
    expect({ code: r.code, signal: r.signal, ok: r.ok }).toEqual({
      code: 0,
      signal: null,
      ok: true,
    });
    expect(r.afterMs).toBeLessThan(1_500);
  }, 20_000);
});

describe("rv21: a final write on the route when the server freezes (a server of this file's own)", () => {
  let server: PostgresServer;
  let frozen = false;
  beforeAll(async () => {
    server = await startPostgres();
    const setup = new pg.Pool({ connectionString: server.url, max: 1 });
    await createPostgresStore({ pool: setup }).ensureSchema();
    await setup.end();
  }, 60_000);
  afterAll(async () => {
    if (frozen) server?.thaw();
    await server?.close();
  });

  it('held: the completion in flight on the route fails typed WHILE the server is frozen (bounded), and after the thaw the outcome is recorded once: the retry is recognised, another owner refused', async () => {
    const pool = new pg.Pool({
      connectionString: server.url,
      ...recommendedPoolConfig({ statementTimeoutMs: 600 }),
      max: 1,
    });
    pool.on('error', () => {});
    pools.push(pool);
    const prefix = randomName('rv21z');
    const store = createPostgresStore({ pool, keyPrefix: prefix, statementTimeoutMs: 600 });
    const lease = { key: 'k', owner: 'owner-a', leaseMs: 30_000, retentionMs: 60_000 };
    expect((await store.acquire({ ...lease, fingerprint: 'f' })).kind).toBe('acquired');
    // The pool's one connection checked out by the app: the completion takes the route.
    const app = await pool.connect();
    let settled = false;
    const completing = store
      .complete({ ...lease, outcome: outcome('frozen') })
      .catch((error: unknown) => error)
      .finally(() => {
        settled = true;
      });
    await sleep(5);
    server.freeze();
    frozen = true;
    // Bounded: it settles while the server is still frozen (the loop waits 5 s at most).
    for (let i = 0; i < 100 && !settled; i++) await sleep(50);
    const settledWhileFrozen = settled;
    server.thaw();
    frozen = false;
    app.release();
    expect(settledWhileFrozen).toBe(true);
    const first = await completing;
    // Landed before the freeze (ok), or failed typed: never another kind of answer.
    if (!(first instanceof StoreUnavailableError)) expect(first).toEqual({ ok: true });
    let again: unknown;
    for (let i = 0; i < 40; i++) {
      again = await store
        .complete({ ...lease, outcome: outcome('frozen') })
        .catch((e: unknown) => e);
      if (!(again instanceof Error)) break;
      await sleep(100);
    }
    expect(again).toEqual({ ok: true });
    expect(await store.complete({ ...lease, owner: 'owner-b', outcome: outcome('other') })).toEqual(
      { ok: false, reason: 'not_owner' },
    );
    const record = await store.get('k');
    expect(record?.status).toBe('completed');
    expect(new TextDecoder().decode(record?.outcome)).toBe('frozen');
  }, 30_000);
});
