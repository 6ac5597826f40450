import { InProgressError } from '@idem/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { parseTableName } from '../src/table-name.js';
import { GUARDED_BYTES, UploadGuard, uploadGuardSql } from '../src/upload-guard.js';
import {
  catalogChange,
  DATABASE_URL,
  dropRole,
  makePool,
  pollUntil,
  randomName,
  sleep,
  uploadGuardsRunning,
} from './pg-env.js';
import { insertCharge, untilTakenOver } from './take-over.js';
import { startThrottledProxy } from './throttled-proxy.js';
import { copyIn, copyLines, countArmed, reviewSchema } from './upload-guard-helpers.js';

/**
 * Adversarial review of the upload guard (src/upload-guard.ts, merged with "Merge wt/pg"):
 * exactly-once, isolation (which backend a guard may end), bounded time and resources, bad
 * input, roles, the normal path. Own schema (`pgrev25r_*`), own roles, own tables.
 */
const APP = 'pgrev25r-review';
const { schema, table, charges, raw, engineOn, onDirectPool } = reviewSchema('pgrev25r', APP, 4);
const held = parseTableName(table).sibling('_held_leases');

const fenceRows = async (scope: string) =>
  (await raw.query(`SELECT fence FROM ${charges} WHERE scope = $1 ORDER BY id`, [scope])).rows.map(
    (r) => Number(r.fence),
  );

/** Backends running a guard's loop for this file's table now. */
const guardsRunning = () => uploadGuardsRunning(raw, schema);
const until = pollUntil;

/** Waits (bounded) until one guard armed on the pool `counts` watches. */
async function armedOnce(counts: { armed: number }): Promise<void> {
  expect(
    await pollUntil(
      async () => counts.armed,
      (n) => n === 1,
      5_000,
    ),
  ).toBe(1);
}

const big = (bytes: number) => `SELECT length('${'x'.repeat(bytes)}') AS n`;

/** A pool behind a ~400 KB/s uplink, `warm` connections open. */
async function throttledPool(max: number, warm: number, user?: string, role?: string) {
  const proxy = await startThrottledProxy(20_000);
  const url = new URL(proxy.url);
  if (user) url.username = user;
  const pool = new pg.Pool({
    connectionString: url.toString(),
    max,
    application_name: `${APP}-slow`,
    ...(role ? { onConnect: (client: pg.ClientBase) => client.query(`SET ROLE ${role}`) } : {}),
  } as pg.PoolConfig);
  pool.on('error', () => {});
  const open = await Promise.all(Array.from({ length: warm }, () => pool.connect()));
  for (const c of open) c.release();
  return { proxy, pool };
}

const pidOf = (client: unknown) => (client as { processID: number }).processID;

/**
 * An owner's engine behind a ~400 KB/s uplink (as `user`, switched to `role`), the guards
 * armed on its pool counted, and duplicates' engine on a direct pool, for one key of a scope.
 */
async function ownerAndDuplicates(user?: string, role?: string) {
  const { proxy, pool } = await throttledPool(4, 3, user, role);
  const dupPool = makePool({ max: 2, application_name: APP });
  const keyPrefix = randomName('frozen');
  return {
    proxy,
    counts: countArmed(pool),
    scope: randomName('scope'),
    owner: engineOn(pool, keyPrefix, { statementTimeoutMs: 1_500 }),
    duplicates: engineOn(dupPool, keyPrefix),
    async close() {
      proxy.close();
      await dupPool.end();
      void pool.end().catch(() => {});
    },
  };
}

/**
 * An owner sends `send` on its transaction over a ~400 KB/s uplink (as `user`, switched to
 * `role`), which stops 1 s in, while its process lives on; duplicates (direct, 409s retried
 * every 100 ms) try to take the key over for 12 s. Whether one did, the business rows'
 * fences, and the guards armed on the owner's pool.
 */
async function frozenMidUpload(
  send: (tx: pg.PoolClient) => Promise<unknown>,
  user?: string,
  role?: string,
) {
  const { proxy, counts, scope, owner, duplicates, close } = await ownerAndDuplicates(user, role);
  let uploading!: () => void;
  const started = new Promise<void>((resolve) => {
    uploading = resolve;
  });
  try {
    const first = owner.execute({ key: 'k', scope }, async ({ tx, fence }) => {
      await insertCharge(tx, charges, scope, fence);
      const sent = send(tx);
      uploading();
      await sent.catch(() => {});
      return 'owner';
    });
    first.catch(() => {});
    await started;
    await sleep(1_000);
    proxy.freezeUplinks();
    const { value } = await untilTakenOver(
      duplicates,
      { key: 'k', scope },
      async ({ tx, fence }) => {
        await insertCharge(tx, charges, scope, fence);
        return 'duplicate';
      },
      { limitMs: 12_000, pauseMs: 100 },
    );
    return { tookOver: value === 'duplicate', fences: await fenceRows(scope), armed: counts.armed };
  } finally {
    await close();
  }
}

describe('pgrev25 review: upload guard', () => {
  // ---------------------------------------------------------------- findings

  // FINDING medium: the statement is held (its idle timer running on the server: nothing
  // was sent since the last ReadyForQuery, and the heartbeat's SELECT 1 queues behind it)
  // for as long as the guard takes to arm, up to statementTimeoutMs (2 s by default), which
  // nothing relates to the idle limit (the lease and a margin: 1.39 s for a 1 s lease). A
  // guard slow to arm (its pool connection slow to open: TLS, a loaded server, an onConnect
  // hook) made the server end a live owner's transaction on a fast link, where the statement
  // sent at once (before the merge) ran. Fixed: the wait for the guard ends, and the
  // statement goes as before, once the idle limit less half its margin over the lease passed
  // since the connection's last ReadyForQuery.
  it('a guard slow to arm (its new pool connection takes 1.8 s) never holds the statement past the idle limit: a live owner on a fast link completes', async () => {
    let slow = false;
    const pool = new pg.Pool({
      connectionString: DATABASE_URL,
      max: 4,
      application_name: APP,
      onConnect: async () => {
        if (slow) await sleep(1_800);
      },
    } as pg.PoolConfig);
    pool.on('error', () => {});
    const warm = await pool.connect();
    warm.release();
    const scope = randomName('scope');
    // A 1 s lease: idle limit 1 388 ms; the store's statement limit the default 2 s.
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool, table, keyPrefix: randomName('slowarm') }),
      leaseMs: 1_000,
      maxHoldMs: 60_000,
    });
    try {
      const outcome = await engine
        .execute({ key: 'k', scope }, async ({ tx, fence }) => {
          await insertCharge(tx, charges, scope, fence);
          // The engine's own renewal connection is open by now (opened at the start).
          await sleep(300);
          slow = true;
          const { rows } = await tx.query(big(100_000));
          slow = false;
          return String(rows[0].n);
        })
        .then(
          (r) => r,
          (error: Error) => `${error.name}: ${error.message}`,
        );
      slow = false;
      expect(outcome).toEqual({ value: '100000', replayed: false });
      expect(await fenceRows(scope)).toEqual([1]);
    } finally {
      slow = false;
      await pool.end();
    }
  }, 30_000);

  // FINDING high (isolation): the guard's termination names the backend by pid and
  // transaction id through pg_stat_activity, but that view is a snapshot cached for the
  // guard's whole transaction until pg_stat_clear_snapshot(), which the loop calls only at
  // its top. A guard stalled between its read and its termination (its SELECT of the held
  // leases waits for a lock on that table: a VACUUM FULL, an ALTER, a LOCK TABLE) acts on
  // what it read before the stall: by then the owner had committed, its pooled connection was
  // given to someone else's transaction, the owner's leases passed, and the guard ended that
  // unrelated transaction's backend. Fixed: the guard reads pg_stat_activity again
  // (pg_stat_clear_snapshot) in the statement that ends the backend.
  it('a guard stalled before its termination (a lock on the held-lease table) never ends the unrelated transaction the owner’s pooled connection runs by then', async () => {
    const pool = makePool({ max: 2, application_name: APP });
    // The held-lease renewals wait for the lock too: a 2 s lease outlives the statement's wait
    // for its guard (the store's 1 s limit).
    const engine = engineOn(pool, randomName('stale'), { statementTimeoutMs: 1_000 });
    const locker = new pg.Client({ connectionString: DATABASE_URL, application_name: APP });
    await locker.connect();
    const scope = randomName('scope');
    let ownerPid = 0;
    let lockedAt = 0;
    let reused: pg.PoolClient | undefined;
    try {
      const outcome = await engine.execute({ key: 'k', scope }, async ({ tx, fence }) => {
        await insertCharge(tx, charges, scope, fence);
        ownerPid = pidOf(tx);
        await locker.query('BEGIN');
        await locker.query(`LOCK TABLE ${held} IN ACCESS EXCLUSIVE MODE`);
        lockedAt = performance.now();
        const { rows } = await tx.query(big(100_000));
        return String(rows[0].n);
      });
      expect(outcome).toEqual({ value: '100000', replayed: false });
      // The guard still runs (its SELECT waits for the lock) on the pool's other connection:
      // the only idle one is the owner's, given back after its COMMIT.
      expect(await guardsRunning()).toBe(1);
      reused = await pool.connect();
      // Its backend ended under it surfaces as an 'error' event: seen below, not a crash.
      reused.on('error', () => {});
      expect(pidOf(reused)).toBe(ownerPid);
      await reused.query('BEGIN');
      await reused.query('SELECT txid_current()');
      // The owner's leases (2 s, last renewed before the lock) and the margin (665 ms) pass.
      await sleep(Math.max(0, lockedAt + 3_200 - performance.now()));
      await locker.query('ROLLBACK');
      await until(guardsRunning, (n) => n === 0, 5_000);
      const alive = await reused.query('SELECT 1 AS one').then(
        () => 'alive',
        (error: Error) => error.message,
      );
      expect(alive).toBe('alive');
      expect(await fenceRows(scope)).toEqual([1]);
    } finally {
      await locker.query('ROLLBACK').catch(() => {});
      await locker.end().catch(() => {});
      if (reused) {
        await reused.query('ROLLBACK').catch(() => {});
        reused.release(true);
      }
      await pool.end();
    }
  }, 30_000);

  // FINDING medium (pre-existing, not closed by the guard), fixed: a statement with a large
  // parameter that is not a named statement run again goes as a small Parse then a large
  // Bind. The Parse is read under the idle timer, which the server then disarms until the
  // next ReadyForQuery: the Bind was read with no idle timer and no guard (only a statement's
  // first message was guarded), so an owner whose uplink stopped mid-Bind kept the record's
  // row locked for as long as TCP kept the connection: the duplicate never took over. Now the
  // whole statement, still in node-postgres' corked write, is held until a guard is armed, and
  // the guard watches the statement until it ends (its ReadyForQuery), not only its first
  // message.
  it('the owner’s uplink stops mid-Bind of a 1.2 MB parameter (Parse sent first): its transaction ends once its leases passed, the duplicate takes over, nothing of the owner commits', async () => {
    const { tookOver, fences } = await frozenMidUpload((tx) =>
      tx.query('SELECT length($1::text) AS n', ['y'.repeat(1_200_000)]),
    );
    expect(tookOver).toBe(true);
    expect(fences).toEqual([2]);
  }, 40_000);

  // FINDING medium (pre-existing, the same gap as the Bind's), fixed: the server reads the data
  // of a `COPY ... FROM STDIN` with no idle timer and (its opening Query small) no guard: an
  // owner cut off mid-COPY kept the record's row locked for as long as TCP kept the connection.
  // A `COPY ... FROM STDIN` opening a statement in a held transaction is now guarded whatever
  // its size (unknown when it opens), the guard watching until its ReadyForQuery.
  it('the owner’s uplink stops mid-COPY FROM STDIN of 1.2 MB: its transaction ends once its leases passed, the duplicate takes over, nothing of the owner commits', async () => {
    const { tookOver, fences, armed } = await frozenMidUpload(async (tx) => {
      await tx.query('CREATE TEMP TABLE copied (v text) ON COMMIT DROP');
      await copyIn(tx, 'copied', copyLines(1_200, 999));
    });
    expect(tookOver).toBe(true);
    expect(fences).toEqual([2]);
    expect(armed).toBe(1);
  }, 40_000);

  it('a COPY FROM STDIN on a fast link: guarded (one guard, gone with its ReadyForQuery), every row copied, committed', async () => {
    const { pool, counts, scope, engine } = onDirectPool(3, 'copy');
    try {
      const outcome = await engine.execute({ key: 'k', scope }, async ({ tx, fence }) => {
        await insertCharge(tx, charges, scope, fence);
        await tx.query('CREATE TEMP TABLE copied (v text) ON COMMIT DROP');
        await copyIn(tx, 'copied', copyLines(300, 99));
        // A small COPY too: its size is not known when it opens.
        await copyIn(tx, 'copied', copyLines(2, 9));
        const { rows } = await tx.query('SELECT count(*)::int AS n FROM copied');
        return String(rows[0].n);
      });
      expect(outcome).toEqual({ value: '302', replayed: false });
      expect(counts.armed).toBe(2);
      expect(await until(guardsRunning, (n) => n === 0, 3_000)).toBe(0);
      expect(await fenceRows(scope)).toEqual([1]);
    } finally {
      await pool.end();
    }
  });

  it('a large outcome: its completion inside the transaction (a Bind of 100 KB after its Parse) is guarded, commits, and replays', async () => {
    const { pool, counts, scope, engine } = onDirectPool(3, 'bigout');
    const value = 'o'.repeat(100_000);
    try {
      const outcome = await engine.execute({ key: 'k', scope }, async ({ tx, fence }) => {
        await insertCharge(tx, charges, scope, fence);
        return value;
      });
      expect(outcome).toEqual({ value, replayed: false });
      expect(counts.armed).toBe(1);
      expect(await engine.execute({ key: 'k', scope }, async () => 'again')).toEqual({
        value,
        replayed: true,
      });
      expect(await until(guardsRunning, (n) => n === 0, 3_000)).toBe(0);
      expect(await fenceRows(scope)).toEqual([1]);
    } finally {
      await pool.end();
    }
  });

  // ---------------------------------------------------------------- attacks that held

  /** A raw client in a transaction, its pid and 64-bit transaction id. */
  async function openTransaction() {
    const client = new pg.Client({ connectionString: DATABASE_URL, application_name: APP });
    client.on('error', () => {});
    await client.connect();
    await client.query('BEGIN');
    const { rows } = await client.query('SELECT txid_current()::text AS xid');
    return { client, pid: pidOf(client), xid: String(rows[0].xid) };
  }

  /** Runs a guard's loop for `record` on a client of its own; its notices and its end. */
  async function runGuard(record: { pid: number; xid: string; key: string }, marginMs: number) {
    const guard = new pg.Client({ connectionString: DATABASE_URL, application_name: APP });
    guard.on('error', () => {});
    await guard.connect();
    const notices: string[] = [];
    guard.on('notice', (n: { message?: string }) => notices.push(String(n.message)));
    await guard.query('BEGIN');
    const sql = uploadGuardSql(
      parseTableName(table),
      { ...record, owner: 'o', fence: 1 },
      marginMs,
      (v) => guard.escapeLiteral(v),
    );
    const ended = guard.query(sql).then(
      () => 'returned',
      (e: Error) => e.message,
    );
    return { guard, notices, ended };
  }

  const heldLease = (key: string, inMs: number) =>
    raw.query(
      `INSERT INTO ${held} (key, fence, lease_until) VALUES ($1, 1, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + $2)`,
      [key, inMs],
    );

  /** A transaction watched by an armed guard: its held lease passes in `leaseMs`. */
  async function watched(leaseMs: number, marginMs: number) {
    const key = randomName('iso');
    await heldLease(key, leaseMs);
    const owner = await openTransaction();
    const { guard, notices, ended } = await runGuard({ ...owner, key }, marginMs);
    await until(
      async () => notices.length,
      (n) => n > 0,
      3_000,
    );
    expect(notices).toEqual(['idem upload guard: armed']);
    return { owner, guard, ended };
  }

  it('the guard ends the watched transaction once its leases passed by the margin, not before', async () => {
    const { owner, guard, ended } = await watched(1_500, 500);
    try {
      // Watched from outside: a statement on the owner's connection would end the watch.
      const backend = async () =>
        Number(
          (
            await raw.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [
              owner.pid,
            ])
          ).rows[0].n,
        );
      await sleep(300);
      expect(await backend()).toBe(1);
      expect(await ended).toBe('returned');
      expect(await until(backend, (n) => n === 0, 3_000)).toBe(0);
      const after = await owner.client.query('SELECT 1').then(
        () => 'alive',
        (e: { code?: string }) => e.code ?? 'ended',
      );
      expect(['57P01', 'ended']).toContain(after);
    } finally {
      await guard.end().catch(() => {});
      await owner.client.end().catch(() => {});
    }
  });

  it('isolation: the watched transaction ends and another begins on the same backend before the leases pass: the guard returns, the new transaction lives', async () => {
    const { owner, guard, ended } = await watched(400, 100);
    try {
      await owner.client.query('COMMIT');
      await owner.client.query('BEGIN');
      await owner.client.query('SELECT txid_current()');
      expect(await ended).toBe('returned');
      await sleep(800);
      expect(await owner.client.query('SELECT 1').then(() => 'alive')).toBe('alive');
    } finally {
      await guard.end().catch(() => {});
      await owner.client.end().catch(() => {});
    }
  });

  it('isolation: a guard for a backend that is not in that transaction (another xid, a pid gone) is never armed and ends nothing', async () => {
    const key = randomName('iso');
    await heldLease(key, -10_000);
    const other = await openTransaction();
    const gone = await openTransaction();
    await gone.client.end();
    try {
      for (const record of [
        { pid: other.pid, xid: String(BigInt(other.xid) + 1n), key },
        { pid: gone.pid, xid: gone.xid, key },
      ]) {
        const { guard, notices, ended } = await runGuard(record, 0);
        expect(await ended).toBe('returned');
        expect(notices).toEqual(['idem upload guard: not armed']);
        await guard.end();
      }
      expect(await other.client.query('SELECT 1').then(() => 'alive')).toBe('alive');
    } finally {
      await other.client.end().catch(() => {});
    }
  });

  it('normal path: small statements take no guard, and the connection goes back to the pool as it came (its own methods, its listeners): reused, a large statement there takes none', async () => {
    const { pool, counts, scope, engine } = onDirectPool(3, 'normal');
    let business: pg.PoolClient | undefined;
    let readyListeners = 0;
    try {
      const probe = await pool.connect();
      readyListeners = (
        probe as unknown as { connection: { listenerCount(e: string): number } }
      ).connection.listenerCount('readyForQuery');
      probe.release();
      const outcome = await engine.execute({ key: 'k', scope }, async ({ tx, fence }) => {
        business = tx;
        await insertCharge(tx, charges, scope, fence);
        for (let i = 0; i < 200; i++) await tx.query('SELECT $1::int AS i', [i]);
        await tx.query(big(GUARDED_BYTES - 100));
        await tx.query('SELECT length($1::text) AS n', ['z'.repeat(GUARDED_BYTES - 200)]);
        return 'done';
      });
      expect(outcome).toEqual({ value: 'done', replayed: false });
      expect(counts.armed).toBe(0);
      const connection = (business as unknown as { connection: object }).connection;
      expect(Object.hasOwn(connection, '_send')).toBe(false);
      expect(Object.hasOwn(connection, 'flush')).toBe(false);
      expect(
        (connection as { listenerCount(e: string): number }).listenerCount('readyForQuery'),
      ).toBe(readyListeners);
      // The same backend, outside the engine: a large statement goes as it is.
      const again = await pool.connect();
      try {
        await again.query('BEGIN');
        const { rows } = await again.query(big(GUARDED_BYTES * 3));
        expect(Number(rows[0].n)).toBe(GUARDED_BYTES * 3);
        await again.query('COMMIT');
      } finally {
        again.release();
      }
      expect(counts.armed).toBe(0);
      expect(await fenceRows(scope)).toEqual([1]);
    } finally {
      await pool.end();
    }
  });

  it('bad input: a multi-statement simple query, a named statement with a large Parse and an unnamed statement with a large parameter (its Bind) are guarded; all answer right', async () => {
    const { pool, counts, scope, engine } = onDirectPool(4, 'input');
    const seen: Array<{ what: string; value: number; guards: number }> = [];
    try {
      const outcome = await engine.execute({ key: 'k', scope }, async ({ tx, fence }) => {
        await insertCharge(tx, charges, scope, fence);
        const step = async (what: string, run: () => Promise<number>) => {
          const before = counts.armed;
          const value = await run();
          seen.push({ what, value, guards: counts.armed - before });
        };
        const text = 'q'.repeat(200_000);
        await step('multi', async () => {
          const results = (await tx.query(
            `SELECT 1; SELECT length('${text}') AS n; SELECT 3`,
          )) as unknown as Array<{ rows: Array<{ n?: number }> }>;
          return Number(results[1]?.rows[0]?.n);
        });
        await step('named parse', async () => {
          const { rows } = await tx.query({
            name: randomName('big_parse'),
            text: `SELECT length('${text}') + $1::int AS n`,
            values: [1],
          });
          return Number(rows[0].n);
        });
        await step('unnamed bind', async () => {
          const { rows } = await tx.query('SELECT length($1::text) AS n', [text]);
          return Number(rows[0].n);
        });
        return 'done';
      });
      expect(outcome).toEqual({ value: 'done', replayed: false });
      expect(seen).toEqual([
        { what: 'multi', value: 200_000, guards: 1 },
        { what: 'named parse', value: 200_001, guards: 1 },
        { what: 'unnamed bind', value: 200_000, guards: 1 },
      ]);
      expect(await until(guardsRunning, (n) => n === 0, 3_000)).toBe(0);
    } finally {
      await pool.end();
    }
  });

  it('bounded resources: pools of 1 and 2, and 8 executions of large statements on a pool of 4: no deadlock, all complete, no guard left, every connection back', async () => {
    for (const [max, executions] of [
      [1, 1],
      [2, 2],
      [4, 8],
    ] as const) {
      const pool = makePool({ max, application_name: APP });
      let removed = 0;
      pool.on('remove', () => {
        removed++;
      });
      // Leases long enough for the waits of 8 executions for 4 connections (with or without
      // guards, a 2 s lease was lost now and then while an execution waited for one).
      const engine = engineOn(pool, randomName('many'), {
        statementTimeoutMs: 8_000,
        leaseMs: 10_000,
        heartbeatMs: 2_000,
      });
      const scope = randomName('scope');
      const started = performance.now();
      try {
        const outcomes = await Promise.all(
          Array.from({ length: executions }, (_, i) =>
            engine.execute({ key: `k${i}`, scope }, async ({ tx, fence }) => {
              await insertCharge(tx, charges, scope, fence);
              let total = 0;
              for (let j = 0; j < 3; j++) total += Number((await tx.query(big(150_000))).rows[0].n);
              return String(total);
            }),
          ),
        );
        const ms = performance.now() - started;
        expect(outcomes.map((o) => o.value)).toEqual(Array(executions).fill('450000'));
        expect(ms).toBeLessThan(15_000);
        expect(await until(guardsRunning, (n) => n === 0, 3_000)).toBe(0);
        expect(
          await until(
            async () => pool.totalCount - pool.idleCount,
            (busy) => busy === 0,
            3_000,
          ),
        ).toBe(0);
        expect(removed).toBe(0);
        expect((await fenceRows(scope)).length).toBe(executions);
      } finally {
        await pool.end();
      }
    }
  }, 60_000);

  it('exactly once: a live owner’s guarded upload (1.2 MB at ~400 KB/s, longer than the idle limit) is never ended while duplicates hammer; it completes, they replay it', async () => {
    const { counts, scope, owner, duplicates, close } = await ownerAndDuplicates();
    let running!: () => void;
    const started = new Promise<void>((resolve) => {
      running = resolve;
    });
    try {
      let done = false;
      const first = owner
        .execute({ key: 'k', scope }, async ({ tx, fence }) => {
          await insertCharge(tx, charges, scope, fence);
          running();
          const { rows } = await tx.query(big(1_200_000));
          return String(rows[0].n);
        })
        .finally(() => {
          done = true;
        });
      await started;
      let conflicts = 0;
      let ran = 0;
      while (!done) {
        await duplicates
          .execute({ key: 'k', scope }, async () => {
            ran++;
            return 'duplicate';
          })
          .catch((error: unknown) => {
            expect(error).toBeInstanceOf(InProgressError);
            conflicts++;
          });
        await sleep(100);
      }
      expect(await first).toEqual({ value: '1200000', replayed: false });
      expect(counts.armed).toBe(1);
      expect(ran).toBe(0);
      expect(conflicts).toBeGreaterThan(5);
      expect(
        await duplicates.execute({ key: 'k', scope }, async () => {
          ran++;
          return 'duplicate';
        }),
      ).toEqual({ value: '1200000', replayed: true });
      expect(ran).toBe(0);
      expect(await fenceRows(scope)).toEqual([1]);
    } finally {
      await close();
    }
  }, 40_000);

  it('bounded time: the guard’s backend ended by an operator mid-upload: the live owner completes, the guard’s connection is dropped, nothing crashes', async () => {
    const { proxy, pool } = await throttledPool(4, 3);
    let removed = 0;
    pool.on('remove', () => {
      removed++;
    });
    const scope = randomName('scope');
    const counts = countArmed(pool);
    const engine = engineOn(pool, randomName('killguard'), { statementTimeoutMs: 1_500 });
    try {
      const run = engine.execute({ key: 'k', scope }, async ({ tx, fence }) => {
        await insertCharge(tx, charges, scope, fence);
        const { rows } = await tx.query(big(1_000_000));
        return String(rows[0].n);
      });
      // Killed once armed (before, the statement simply goes under the idle limit).
      await armedOnce(counts);
      await raw.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'DO $idem_upload_guard$%' AND query LIKE '%${schema}%' AND pid <> pg_backend_pid()`,
      );
      expect(await run).toEqual({ value: '1000000', replayed: false });
      expect(removed).toBeGreaterThanOrEqual(1);
      expect(await fenceRows(scope)).toEqual([1]);
    } finally {
      proxy.close();
      await pool.end().catch(() => {});
    }
  }, 30_000);

  it('bounded time: the owner’s statement fails, or its connection is destroyed mid-upload, or its pool ends: the guard returns at once and no backend is left', async () => {
    // Fails on the server (after the guard armed): rolled back, the guard gone.
    {
      const pool = makePool({ max: 4, application_name: APP });
      const scope = randomName('scope');
      const engine = engineOn(pool, randomName('fail'));
      try {
        const outcome = await engine
          .execute({ key: 'k', scope }, async ({ tx, fence }) => {
            await insertCharge(tx, charges, scope, fence);
            await tx.query(`SELECT length('${'x'.repeat(200_000)}') / 0 AS n`);
            return 'unreachable';
          })
          .then(
            () => 'completed',
            (error: { code?: string }) => error.code,
          );
        expect(outcome).toBe('22012');
        expect(await until(guardsRunning, (n) => n === 0, 3_000)).toBe(0);
        expect(await fenceRows(scope)).toEqual([]);
      } finally {
        await pool.end();
      }
    }
    // Its socket destroyed mid-upload (a slow link): the backend ends, so does the guard.
    {
      const { proxy, pool } = await throttledPool(4, 3);
      const scope = randomName('scope');
      const counts = countArmed(pool);
      const engine = engineOn(pool, randomName('destroy'), { statementTimeoutMs: 1_500 });
      try {
        const outcome = engine
          .execute({ key: 'k', scope }, async ({ tx, fence }) => {
            await insertCharge(tx, charges, scope, fence);
            const sent = tx.query(big(1_200_000));
            sent.catch(() => {});
            await armedOnce(counts);
            await sleep(300);
            (
              tx as unknown as { connection: { stream: { destroy(): void } } }
            ).connection.stream.destroy();
            await sent;
            return 'unreachable';
          })
          .then(
            () => 'completed',
            () => 'failed',
          );
        expect(await outcome).toBe('failed');
        expect(await until(guardsRunning, (n) => n === 0, 3_000)).toBe(0);
        expect(await fenceRows(scope)).toEqual([]);
      } finally {
        proxy.close();
        await pool.end().catch(() => {});
      }
    }
    // The pool ended mid-upload: the end is bounded, no guard and no backend of it left.
    {
      const { proxy, pool } = await throttledPool(4, 3);
      const scope = randomName('scope');
      const counts = countArmed(pool);
      const engine = engineOn(pool, randomName('end'), { statementTimeoutMs: 1_500 });
      let ended: Promise<void> | undefined;
      try {
        const outcome = engine
          .execute({ key: 'k', scope }, async ({ tx, fence }) => {
            await insertCharge(tx, charges, scope, fence);
            const sent = tx.query(big(1_200_000));
            await armedOnce(counts);
            ended = pool.end();
            return String((await sent).rows[0].n);
          })
          .then(
            (r) => r.value,
            () => 'failed',
          );
        await outcome;
        const start = performance.now();
        await ended;
        expect(performance.now() - start).toBeLessThan(10_000);
        expect(await until(guardsRunning, (n) => n === 0, 3_000)).toBe(0);
        const left = await until(
          async () =>
            Number(
              (
                await raw.query(
                  `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = '${APP}-slow'`,
                )
              ).rows[0].n,
            ),
          (n) => n === 0,
          5_000,
        );
        expect(left).toBe(0);
      } finally {
        proxy.close();
      }
    }
  }, 60_000);

  it('pg-native absent or a client without a protocol connection: no guard installed (statements go as before)', () => {
    expect(UploadGuard.install({} as pg.PoolClient, async () => true, 1_000)).toBeUndefined();
    expect(
      UploadGuard.install(
        { connection: { on() {} } } as unknown as pg.PoolClient,
        async () => true,
        1_000,
      ),
    ).toBeUndefined();
  });

  // FINDING low (hardening): an `arm` that threw synchronously (a pool without `options`,
  // a faulty wrapper) threw out of node-postgres' send, and left the guard holding every
  // later message of the connection for good (the connection wedged until it was dropped).
  // Not reachable with a pg.Pool; fixed (caught: the statement is sent as before).
  it('an arm that throws synchronously: the large statement is still sent and answers', async () => {
    const client = new pg.Client({ connectionString: DATABASE_URL, application_name: APP });
    await client.connect();
    try {
      await client.query('BEGIN');
      const guard = UploadGuard.install(
        client as unknown as pg.PoolClient,
        () => {
          throw new TypeError('no pool options');
        },
        10_000,
      );
      expect(guard).toBeDefined();
      const answer = await Promise.race([
        client.query(big(100_000)).then((r) => Number(r.rows[0].n)),
        sleep(3_000).then(() => 'held for good'),
      ]);
      expect(answer).toBe(100_000);
      guard?.uninstall();
      await client.query('ROLLBACK');
    } finally {
      await client.end().catch(() => {});
    }
  });

  describe('roles', () => {
    // A login role the pool connects as, switched at connect (onConnect) to an application
    // role: `watcher` is a member of pg_read_all_stats (it sees every backend's state in
    // pg_stat_activity) but has no privileges of the login role (it may not end its
    // backends); `blind` has neither.
    const login = randomName('pgrev25r_login');
    const watcher = randomName('pgrev25r_watcher');
    const blind = randomName('pgrev25r_blind');
    beforeAll(async () => {
      await catalogChange(raw, `CREATE ROLE ${login} LOGIN`);
      await catalogChange(raw, `CREATE ROLE ${watcher} NOLOGIN IN ROLE pg_read_all_stats`);
      await catalogChange(raw, `CREATE ROLE ${blind} NOLOGIN`);
      await catalogChange(raw, `GRANT ${watcher}, ${blind} TO ${login}`);
      for (const role of [watcher, blind]) {
        await catalogChange(raw, `GRANT USAGE ON SCHEMA ${schema} TO ${role}`);
        await catalogChange(raw, `GRANT ALL ON ALL TABLES IN SCHEMA ${schema} TO ${role}`);
        await catalogChange(raw, `GRANT ALL ON ALL SEQUENCES IN SCHEMA ${schema} TO ${role}`);
        await catalogChange(raw, `GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ${schema} TO ${role}`);
      }
    });
    afterAll(async () => {
      await raw.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '${login}'`,
      );
      await sleep(100);
      for (const role of [blind, watcher, login]) await dropRole(raw, role).catch(() => {});
    });

    // FINDING low: the guard is armed (the statement goes behind a Flush, no idle timer) as
    // soon as it sees the backend in pg_stat_activity, which a role may (pg_read_all_stats,
    // pg_monitor) without being allowed to end that backend: its pg_terminate_backend then
    // fails (permission denied), the guard is gone, and an owner frozen mid-upload keeps the
    // record's row for as long as TCP keeps its connection: worse than "as before" (the idle
    // limit), which the README promises where the guard cannot work. Fixed: the guard reads
    // both leases, then arms only if pg_terminate_backend's rule lets it end that backend.
    it('a role that sees the backend but may not end it: the guard is never armed, a frozen owner’s transaction still ends and the duplicate takes over', async () => {
      const { tookOver, fences, armed } = await frozenMidUpload(
        (tx) => tx.query(big(1_200_000)),
        login,
        watcher,
      );
      expect(tookOver).toBe(true);
      expect(fences).toEqual([2]);
      expect(armed).toBe(0);
    }, 40_000);

    it('a role that cannot see the backend in pg_stat_activity: no guard armed, the statement goes as before and completes on a fast link', async () => {
      const url = new URL(DATABASE_URL);
      url.username = login;
      const pool = new pg.Pool({
        connectionString: url.toString(),
        max: 4,
        application_name: APP,
        onConnect: (client: pg.ClientBase) => client.query(`SET ROLE ${blind}`),
      } as pg.PoolConfig);
      pool.on('error', () => {});
      const counts = countArmed(pool);
      const scope = randomName('scope');
      const engine = engineOn(pool, randomName('blind'));
      try {
        const outcome = await engine.execute({ key: 'k', scope }, async ({ tx, fence }) => {
          await insertCharge(tx, charges, scope, fence);
          const { rows } = await tx.query(big(GUARDED_BYTES * 2));
          return String(rows[0].n);
        });
        expect(outcome).toEqual({ value: String(GUARDED_BYTES * 2), replayed: false });
        expect(counts.armed).toBe(0);
        expect(await fenceRows(scope)).toEqual([1]);
        expect(await until(guardsRunning, (n) => n === 0, 3_000)).toBe(0);
      } finally {
        await pool.end();
      }
    }, 30_000);
  });
});
