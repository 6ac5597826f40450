import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';
import { InProgressError, InvalidInputError } from '@idem/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BusinessTransaction } from '../src/business-transaction.js';
import { idleLimit } from '../src/hold-record-sql.js';
import {
  createPostgresIdempotency,
  createPostgresStore,
  TransactionNotCommittedError,
} from '../src/index.js';
import { transactionIdleLimit } from '../src/transactional-engine.js';
import { catalogChange, DATABASE_URL, dropRole, makePool, randomName, sleep } from './pg-env.js';
import { cutOffOwner, holdForever, insertCharge, untilTakenOver } from './take-over.js';
import { startProxy } from './tcp-proxy.js';
import { startThrottledProxy } from './throttled-proxy.js';

/**
 * Adversarial review (pgrev19) of cd3813b: transactional heartbeats answered 'held' only on
 * evidence that the server's idle timer was armed within the look-back (replaced since by the
 * held lease, renewed through the pool); the operation runs inside `SAVEPOINT
 * idem_operation`. Findings still open are `it.fails` (the assertion states the claimed
 * guarantee); fixed ones and attacks that held are plain `it`.
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const charges = `"${schema}".pgrev19_charges`;
const raw = makePool({ max: 3 });
const url = new URL(DATABASE_URL);
/** How late a loaded machine's event loop may run the owner's watchdog. */
const LAG_MS = 150;

beforeAll(async () => {
  await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
});
afterAll(() => raw.end());

function viaProxy(port: number): string {
  const via = new URL(DATABASE_URL);
  via.hostname = '127.0.0.1';
  via.port = String(port);
  return via.toString();
}

const fenceRows = async (scope: string) =>
  (await raw.query(`SELECT fence FROM ${charges} WHERE scope = $1 ORDER BY id`, [scope])).rows.map(
    (r) => Number(r.fence),
  );

/**
 * An owner (lease 1 s, heartbeats 200 ms) cut off from the server by a blackholed network
 * once its operation ran past the stored lease (1.3 s: its heartbeats renew only inside the
 * transaction, so the committed `lease_until` stays the acquisition's); then `end` ends its
 * transaction on the server in some way other than the engine's idle limit. Resolves with how
 * long before the duplicate's operation ran the owner's signal had aborted (negative: after;
 * -Infinity: not within 2 s of the takeover) and the takeover's delay after the cut.
 */
async function serverEndsCutOffOwner(
  end: (tag: string) => Promise<void>,
  mark?: (tag: string) => string,
): Promise<{ abortedBeforeTakeoverMs: number; takeoverAfterCutMs: number }> {
  const proxy = await startProxy({ host: url.hostname, port: Number(url.port || 5432) });
  const tag = randomName('pgrev19_victim');
  let cutAt = 0;
  try {
    const { abortedAt, tookOverAt } = await cutOffOwner({
      ownerUrl: viaProxy(proxy.port),
      statementTimeoutMs: 500,
      engine: { leaseMs: 1_000, heartbeatMs: 200, maxHoldMs: 60_000 },
      charges,
      table,
      mark: mark ? mark(tag) : `SELECT set_config('application_name', '${tag}', false)`,
      cutOff: async () => {
        await sleep(1_300);
        proxy.mode = 'blackhole';
        cutAt = performance.now();
        await end(tag);
      },
      pauseMs: 20,
    });
    await sleep(2_000);
    const aborted = abortedAt();
    return {
      abortedBeforeTakeoverMs: aborted === undefined ? -Infinity : tookOverAt - aborted,
      takeoverAfterCutMs: tookOverAt - cutAt,
    };
  } finally {
    await proxy.close();
  }
}

describe('the server ends an owner’s transaction by other means than its idle limit', () => {
  // FINDING (HIGH): the guarantee is argued against the server's idle timer only. But a
  // server also ends the transaction of a client it finds gone: TCP keep-alive
  // (tcp_keepalives_*), tcp_user_timeout, a pooler/proxy/NAT between them that closes or
  // resets the server side, an operator's or a watchdog's pg_terminate_backend of a long
  // "idle in transaction" session. That is exactly what happens to an owner cut off from
  // the server, and it can happen any time after the cut. Since in-transaction heartbeats
  // renew the lease only INSIDE the transaction, the committed lease_until is still the
  // acquisition's, long passed for any operation that ran longer than a lease: the row lock
  // goes with the backend and a duplicate takes the key over AT ONCE, while the owner's
  // signal aborts only at its estimate (up to lease + look-back + grace after the cut).
  // Reproduced: owner blackholed after 1.3 s (lease 1 s, heartbeat 200 ms), its backend
  // terminated on the server (stand-in for keep-alive / tcp_user_timeout / a proxy RST):
  // the duplicate's operation runs ~0.2-0.3 s after the cut, the owner's signal ~0.85 s
  // later (see the logged numbers). Suggested fix: keep a committed lease current while
  // the row is held (e.g. heartbeats renew a lease row of a side table through the pool,
  // which the transaction does not lock, and acquire's takeover requires both leases to
  // have passed); at least set the transaction session's tcp_user_timeout/keep-alives above
  // the idle limit, and document that middleboxes and admins that end sessions break it.
  // PARTLY FIXED: a TCP user timeout or keep-alive idle time shorter than the idle limit is
  // now raised to it for the transaction (test/silent-owner-signal.test.ts), so the server's
  // own TCP limits no longer end it first. Still open (kept as it.fails, stated in the
  // README): a session ended by anything else while the owner is cut off (an operator's kill,
  // as here; a pooler or proxy between that closes its side; PG 17's transaction_timeout).
  // The fix is the committed side lease above.
  // FIXED: heartbeats renew the held lease through the pool while the row is held, and a
  // takeover honours it: however the transaction ends, no duplicate before the owner's last
  // renewal (hence its signal's estimate) has passed.
  it('the backend of a blackholed owner is ended on the server: its signal aborts before the duplicate takes over', async () => {
    const r = await serverEndsCutOffOwner(async (tag) => {
      const { rows } = await raw.query(
        'SELECT count(*)::int AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) t',
        [tag],
      );
      expect(rows[0].n).toBe(1);
    });
    console.info('server-side drop', r);
    expect(r.abortedBeforeTakeoverMs).toBeGreaterThanOrEqual(-LAG_MS);
  });

  // FIXED (was FINDING MEDIUM; the transaction's connection breaking while it holds the row
  // now aborts the operation's signal at once, joined to core's): when the server ends the
  // transaction while the owner's network is fine (an admin's or watchdog's
  // pg_terminate_backend, a backend crash and the server's restart, a failover, PG17's
  // transaction_timeout), the client sees its connection fail at once, but nothing tells the
  // operation: `broken` is only reported to core by the NEXT heartbeat ('lost' ->
  // NOT_OWNER). With the stored lease stale, the duplicate takes over at once and the
  // owner's signal aborts up to one heartbeat interval later (10 s with the default lease).
  // Reproduced: lease 1 s, heartbeat 600 ms, backend terminated 1.3 s in, right after a
  // heartbeat: the duplicate's operation ran ~40-60 ms after the kill and ~540-560 ms before
  // the owner's signal aborted (three runs). Suggested fix: on the
  // transaction connection's 'error'/'end' while the row is held, abort the execution's signal
  // at once (a hook from the engine into core's LeaseKeeper, or an immediate extend that
  // answers NOT_OWNER); and the committed-lease fix above.
  it('the backend of a connected owner is terminated: its signal aborts before the duplicate takes over', async () => {
    // Right after a heartbeat answered (the next one is due ~600 ms later).
    const original = BusinessTransaction.prototype.heartbeat;
    let beat: (() => void) | undefined;
    BusinessTransaction.prototype.heartbeat = async function (this: BusinessTransaction, input) {
      const answer = await original.call(this, input);
      if (answer === 'held') beat?.();
      return answer;
    };
    // A lease a loaded machine's pool renewals meet (at 1 s, CI's Node 24 lane lost it before
    // the kill, and the heartbeats stopped).
    const r = await duplicateWhileOwnerRuns({ leaseMs: 2_000, heartbeatMs: 1_200 }, async (tx) => {
      await new Promise<void>((resolve) => {
        beat = resolve;
        setTimeout(resolve, 6_000); // bounded: the kill goes ahead anyway
      });
      const pid = (tx as unknown as { processID: number }).processID;
      // The server ends the session (an operator's or a watchdog's kill, a crash, a failover).
      await raw.query('SELECT pg_terminate_backend($1)', [pid]);
    }).finally(() => {
      BusinessTransaction.prototype.heartbeat = original;
    });
    console.info('terminated, network fine', { ...r, outcome: String(r.outcome) });
    expect(r.rows).toEqual([2]);
    expect(r.ownerAbortedAtTakeover).toBe(true);
  });

  // FINDING (LOW): the engine trusts its own `SET LOCAL idle_in_transaction_session_timeout`
  // to be the transaction's idle limit, but the operation runs on the same transaction and
  // may set it lower (`SET [LOCAL] idle_in_transaction_session_timeout`, a defensive habit
  // some code bases have per transaction; `RESET ALL` returns it to the session's value).
  // Cut off, the owner's transaction then ends at that lower limit and (stored lease stale,
  // as above) a duplicate takes over long before the owner's signal aborts. Reproduced with
  // the operation's `SET LOCAL idle_in_transaction_session_timeout = 300`. Suggested fix:
  // have the in-transaction extend read current_setting('idle_in_transaction_session_timeout')
  // and count nothing (or re-`SET LOCAL` it) when it is below the engine's idle limit; or
  // document it next to "never send transaction control on tx".
  // FIXED (the held lease, above): the idle limit no longer decides when a duplicate may take over.
  it("the operation lowers the transaction's idle limit: its signal aborts before the duplicate takes over", async () => {
    const r = await serverEndsCutOffOwner(
      async () => {},
      () => 'SET LOCAL idle_in_transaction_session_timeout = 300',
    );
    console.info('idle limit lowered by the operation', r);
    expect(r.abortedBeforeTakeoverMs).toBeGreaterThanOrEqual(-LAG_MS);
  });
});

/**
 * An owner whose operation inserts its row, runs past the stored lease (1.3 s, heartbeats
 * renewing inside the transaction), then runs `misbehave` on `tx` and goes on for 2.5 s (a
 * remote call, say) before it returns. Meanwhile a duplicate tries every 20 ms, for 2 s.
 * Resolves with what happened.
 */
async function duplicateWhileOwnerRuns(
  engineOptions: { leaseMs: number; heartbeatMs: number },
  misbehave: (tx: pg.PoolClient, scope: string, fence: number) => Promise<void>,
) {
  const pool = makePool({ max: 4 });
  const dupPool = makePool({ max: 2 });
  const keyPrefix = randomName('r19dup');
  const scope = randomName('scope');
  const options = { ...engineOptions, maxHoldMs: 60_000 };
  const owner = createPostgresIdempotency<string>({
    // A limit a loaded machine's renewals meet.
    store: createPostgresStore({ pool, table, keyPrefix, statementTimeoutMs: 2_000 }),
    ...options,
  });
  const duplicates = createPostgresIdempotency<string>({
    store: createPostgresStore({ pool: dupPool, table, keyPrefix }),
    ...options,
  });
  let abortedAt: number | undefined;
  let misbehaved!: () => void;
  const done = new Promise<void>((resolve) => {
    misbehaved = resolve;
  });
  try {
    const first = owner.execute({ key: 'k', scope }, async ({ tx, fence, signal }) => {
      signal.addEventListener('abort', () => {
        abortedAt = performance.now();
      });
      await insertCharge(tx, charges, scope, fence);
      await sleep(1_300);
      await misbehave(tx, scope, fence);
      misbehaved();
      await sleep(2_500);
      return 'owner';
    });
    first.catch(() => {});
    await Promise.race([
      done,
      first.then(
        () => {},
        () => {},
      ),
    ]);
    const started = performance.now();
    let tookOverAt: number | undefined;
    let ownerAbortedAtTakeover: boolean | undefined;
    let conflicts = 0;
    // A takeover waits for the owner's held lease (renewed up to a lease ago).
    while (
      tookOverAt === undefined &&
      performance.now() - started < engineOptions.leaseMs + 1_500
    ) {
      try {
        await duplicates.execute({ key: 'k', scope }, async ({ tx, fence }) => {
          tookOverAt = performance.now();
          ownerAbortedAtTakeover = abortedAt !== undefined;
          await insertCharge(tx, charges, scope, fence);
          return 'duplicate';
        });
      } catch (error) {
        expect(error).toBeInstanceOf(InProgressError);
        conflicts++;
        await sleep(20);
      }
    }
    const outcome = await first.then(
      (v) => v,
      (error: unknown) => error,
    );
    return {
      tookOverAfterMs: tookOverAt === undefined ? undefined : tookOverAt - started,
      ownerAbortedAtTakeover,
      ownerAbortedAfterTakeoverMs:
        tookOverAt === undefined || abortedAt === undefined ? undefined : abortedAt - tookOverAt,
      conflicts,
      outcome,
      rows: await fenceRows(scope),
    };
  } finally {
    await pool.end();
    await dupPool.end();
  }
}

describe("the operation touches the engine's savepoint or chains the transaction", () => {
  // FINDING (LOW, misuse of tx but silent): after `RELEASE SAVEPOINT idem_operation` the
  // operation runs at the top level again, so a failed statement it catches aborts the whole
  // transaction and frees the row lock at once (stored lease stale: a duplicate takes over
  // immediately). The heartbeats still answer 'held': the 'E' ReadyForQuery of their own
  // failing extend (25P02) counts as evidence from the previous ReadyForQuery, which is the
  // previous heartbeat's (200 ms < look-back 290 ms), so the owner's signal NEVER aborts (up
  // to the maximum hold) while the duplicate runs. Rows stay exactly once (nothing of the
  // owner commits). Suggested fix: an 'E' ReadyForQuery is evidence only when the top level
  // still holds the row; ask pg_stat_activity (state 'idle in transaction (aborted)' with
  // backend_xid = ours means a failed subtransaction only; a top-level abort clears
  // backend_xid) or count an 'E' only after a 'T' seen inside the same savepoint depth; or
  // reject an operation that released idem_operation (check at completion / document it).
  // FIXED (the held lease, above): the row lock freed by the failed transaction no longer lets a duplicate in.
  it('RELEASE SAVEPOINT idem_operation, then a caught error: the signal aborts before a duplicate takes over', async () => {
    const r = await duplicateWhileOwnerRuns({ leaseMs: 1_000, heartbeatMs: 200 }, async (tx) => {
      await tx.query('RELEASE SAVEPOINT idem_operation');
      await tx.query('SELECT 1/0').catch(() => {});
    });
    console.info('RELEASE SAVEPOINT idem_operation', { ...r, outcome: String(r.outcome) });
    // Exactly once holds: the duplicate's row only.
    expect(r.rows).toEqual(r.tookOverAfterMs === undefined ? [] : [2]);
    expect(r.tookOverAfterMs === undefined || r.ownerAbortedAtTakeover === true).toBe(true);
  });

  // FINDING (LOW, misuse of tx but silent; cheap fix): the in-transaction extend is
  // "owner-checked" but its answer is not read: `extendInTransaction` resolves true for ANY
  // result, including the NULL lease the extend function answers for another owner. After
  // the operation sent `ROLLBACK AND CHAIN` (the transaction and its row lock are gone, the
  // stored lease is the acquisition's, so a duplicate takes over at once; the client's
  // status stays 'T', so the engine never sees it ended), every heartbeat's extend answers
  // NULL in the chained transaction, and counts as evidence: 'held', the owner's signal
  // never aborts while the duplicate runs. Rows stay exactly once (the completion finds the
  // other transaction and is refused). Suggested fix: count the extend's answer only when
  // lease_until is not null; a null answer is `lost` (NOT_OWNER: core aborts at once).
  // PARTLY FIXED: an in-transaction extend answered "not the owner's" now makes the heartbeat
  // answer lost (the signal aborts), so the owner learns it at its next heartbeat; still not
  // before the duplicate runs (misuse of tx, stated in the README).
  // FIXED (the held lease, above).
  it('ROLLBACK AND CHAIN on tx after the stored lease passed: the signal aborts before a duplicate takes over', async () => {
    const r = await duplicateWhileOwnerRuns({ leaseMs: 1_000, heartbeatMs: 600 }, async (tx) => {
      await tx.query('ROLLBACK AND CHAIN');
    });
    console.info('ROLLBACK AND CHAIN', { ...r, outcome: String(r.outcome) });
    expect(r.rows).toEqual(r.tookOverAfterMs === undefined ? [] : [2]);
    expect(r.tookOverAfterMs === undefined || r.ownerAbortedAtTakeover === true).toBe(true);
  });

  // Held: ROLLBACK TO SAVEPOINT idem_operation discards the operation's writes so far but not
  // the row lock (taken before the savepoint); a failed statement afterwards aborts only the
  // subtransaction. Every duplicate gets 409, the owner is not aborted, and exactly the row
  // written after the rollback commits with the record.
  it('ROLLBACK TO SAVEPOINT idem_operation, a new write, a caught error: row held, not aborted, one row', async () => {
    const r = await duplicateWhileOwnerRuns(
      { leaseMs: 1_000, heartbeatMs: 200 },
      async (tx, scope, fence) => {
        await tx.query('ROLLBACK TO SAVEPOINT idem_operation');
        await insertCharge(tx, charges, scope, fence + 100);
        await tx.query('SAVEPOINT mine');
        await tx.query('SELECT 1/0').catch(() => {});
        await tx.query('ROLLBACK TO SAVEPOINT mine');
      },
    );
    console.info('ROLLBACK TO idem_operation', { ...r, outcome: String(r.outcome) });
    expect(r.tookOverAfterMs).toBeUndefined();
    expect(r.conflicts).toBeGreaterThan(5);
    expect(r.outcome).toEqual({ value: 'owner', replayed: false });
    expect(r.rows).toEqual([101]);
  });
});

/** `n` CPU burners at normal priority (not niced), each for at most `ms`; kill() ends them. */
function burners(n: number, ms: number) {
  const children = Array.from({ length: n }, () =>
    spawn(process.execPath, ['-e', `const t=Date.now();while(Date.now()-t<${ms}){}`], {
      stdio: 'ignore',
    }),
  );
  return {
    kill: () => {
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    },
  };
}

describe('healthy owners under CPU load (burners at normal priority, as many as cores)', () => {
  // Held (lease 2 s, heartbeat 500 ms, a warm pool): quick statements, an idle stretch and
  // savepoint errors, beside two un-niced burners on a 2-core machine: none aborted, one row
  // each. (A long statement, or large results, under the same load: the finding below.)
  it('3 owners (quick statements, idle, savepoint errors), 2 burners: none aborted, 3 rows', async () => {
    const pool = makePool({ max: 16, query_timeout: 20_000 });
    const warm = await Promise.all(Array.from({ length: 8 }, () => pool.connect()));
    for (const c of warm) c.release();
    const load = burners(2, 8_000);
    const scope = randomName('scope');
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({
        pool,
        table,
        keyPrefix: randomName('r19load'),
        statementTimeoutMs: 500,
      }),
      leaseMs: 2_000,
      heartbeatMs: 500,
      maxHoldMs: 60_000,
    });
    const shapes: Array<(tx: pg.PoolClient) => Promise<void>> = [
      async (tx) => {
        const t = performance.now();
        for (let n = 0; n < 20_000 && performance.now() - t < 3_000; n++)
          await tx.query('SELECT 1');
      },
      async () => {
        await sleep(3_000); // a remote call, idle in the transaction
      },
      async (tx) => {
        const t = performance.now();
        for (let n = 0; n < 5_000 && performance.now() - t < 3_000; n++) {
          await tx.query('SAVEPOINT s');
          await tx.query('SELECT 1/0').catch(() => {});
          await tx.query('ROLLBACK TO SAVEPOINT s');
        }
      },
    ];
    const signals: AbortSignal[] = [];
    try {
      const runs = shapes.map((shape, i) =>
        engine.execute({ key: `k${i}`, scope }, async ({ tx, fence, signal }) => {
          signals[i] = signal;
          await insertCharge(tx, charges, scope, fence);
          await shape(tx);
          return `v${i}`;
        }),
      );
      const results = await Promise.allSettled(runs);
      const failures = results.flatMap((r, i) =>
        r.status === 'rejected' ? [`${i}: ${String(r.reason)}`] : [],
      );
      expect(failures).toEqual([]);
      expect(signals.map((s) => s.aborted)).toEqual(Array(shapes.length).fill(false));
      expect(await fenceRows(scope)).toHaveLength(shapes.length);
    } finally {
      load.kill();
      await pool.end();
    }
  });
});

/** A loopback proxy whose connections after the first `immediate` reach the server `delayMs` late. */
async function startSlowConnectProxy(immediate: number, delayMs: number) {
  const sockets = new Set<Socket>();
  let count = 0;
  const server = createServer((client) => {
    sockets.add(client);
    client.pause();
    const go = () => {
      if (client.destroyed) return;
      const upstream = createConnection({ host: url.hostname, port: Number(url.port || 5432) });
      sockets.add(upstream);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
      const end = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('close', end).on('error', end);
      upstream.on('close', end).on('error', end);
    };
    count++;
    if (count <= immediate) go();
    else setTimeout(go, delayMs).unref();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: viaProxy((server.address() as { port: number }).port),
    connections: () => count,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

describe('a statement of the operation waits for a lock longer than the lease', () => {
  // Held: a statement blocked on another transaction's row lock (wait_event Lock) shows as
  // 'active' with our backend_xid: the pool's check counts it, the owner is not aborted, a
  // duplicate gets 409 meanwhile, and the owner completes with its one row.
  it('SELECT ... FOR UPDATE behind another transaction for 2.2 s (lease 1 s): not aborted, 409, one row', async () => {
    const pool = makePool({ max: 6, query_timeout: 20_000 });
    const dupPool = makePool({ max: 2 });
    const blocker = await raw.connect();
    const keyPrefix = randomName('r19lock');
    const scope = randomName('scope');
    const options = { leaseMs: 1_000, heartbeatMs: 200, maxHoldMs: 60_000 };
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool, table, keyPrefix, statementTimeoutMs: 500 }),
      ...options,
    });
    const duplicates = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool: dupPool, table, keyPrefix }),
      ...options,
    });
    try {
      const { rows } = await raw.query(
        `INSERT INTO ${charges} (scope, fence) VALUES ($1, 0) RETURNING id`,
        [`${scope}_lock`],
      );
      await blocker.query('BEGIN');
      await blocker.query(`SELECT 1 FROM ${charges} WHERE id = $1 FOR UPDATE`, [rows[0].id]);
      let signal: AbortSignal | undefined;
      let waited = 0;
      const first = engine.execute({ key: 'k', scope }, async ({ tx, fence, signal: s }) => {
        signal = s;
        await insertCharge(tx, charges, scope, fence);
        // (the recommended pool config sets a session lock_timeout)
        await tx.query("SET LOCAL statement_timeout = '30s'; SET LOCAL lock_timeout = '30s'");
        const t = performance.now();
        await tx.query(`SELECT 1 FROM ${charges} WHERE id = $1 FOR UPDATE`, [rows[0].id]);
        waited = performance.now() - t;
        return 'done';
      });
      first.catch(() => {});
      await sleep(1_500);
      await expect(
        duplicates.execute({ key: 'k', scope }, async () => 'duplicate'),
      ).rejects.toBeInstanceOf(InProgressError);
      await sleep(700);
      await blocker.query('COMMIT');
      expect(await first).toEqual({ value: 'done', replayed: false });
      expect(waited).toBeGreaterThan(2_000);
      expect(signal?.aborted).toBe(false);
      expect(await fenceRows(scope)).toEqual([1]);
    } finally {
      await blocker.query('ROLLBACK').catch(() => {});
      blocker.release();
      await pool.end();
      await dupPool.end();
    }
  });
});

describe('an owner idle in a failed subtransaction, default heartbeat ratio', () => {
  // Held: with the default heartbeat (lease / 3, longer than the look-back lease / 4 + grace)
  // an owner that caught an error and then waits (no statement) keeps its heartbeats
  // answered: each heartbeat's extend fails (25P02) but its 'E' ReadyForQuery wakes the
  // heartbeat, which pings again, and the second answer counts from the first (sound: the
  // second extend was sent after it). Not aborted; the row stays held (409); nothing commits.
  it('caught error, then 3.75 s without a statement (lease 1.5 s): not aborted, 409, released', async () => {
    const pool = makePool({ max: 4 });
    const dupPool = makePool({ max: 2 });
    const keyPrefix = randomName('r19e');
    const scope = randomName('scope');
    const options = { leaseMs: 1_500, maxHoldMs: 60_000 };
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool, table, keyPrefix, statementTimeoutMs: 500 }),
      ...options,
    });
    const duplicates = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool: dupPool, table, keyPrefix }),
      ...options,
    });
    expect(engine.settings.heartbeatMs).toBe(500);
    let signal: AbortSignal | undefined;
    try {
      const first = engine.execute({ key: 'k', scope }, async ({ tx, fence, signal: s }) => {
        signal = s;
        await insertCharge(tx, charges, scope, fence);
        await tx.query('SELECT 1/0').catch(() => {});
        await sleep(3_750);
        return 'done';
      });
      first.catch(() => {});
      await sleep(2_250);
      await expect(
        duplicates.execute({ key: 'k', scope }, async () => 'duplicate'),
      ).rejects.toBeInstanceOf(InProgressError);
      const outcome = await first.then(
        (v) => v,
        (error: unknown) => error,
      );
      expect(outcome).toBeInstanceOf(TransactionNotCommittedError);
      expect(signal?.aborted).toBe(false);
      expect(await fenceRows(scope)).toEqual([]);
    } finally {
      await pool.end();
      await dupPool.end();
    }
  });
});

describe('the activity check of a long statement under load', () => {
  // FIXED: the renewals go over the engine's own renewal connection, opened in the background
  // when the execution begins (src/renewal-connection.ts), never a new pool connection in the
  // heartbeat's budget. FINDING (MEDIUM) against the evidence design: a heartbeat of an owner running one statement longer than the lease
  // gets evidence only from the pool's activity check, which (1) is sent only after
  // checkAfterMs (min(250, lease/8, storeTimeout/2)) although the engine can see locally
  // that its connection has a statement in flight (the extend can only queue behind it),
  // and (2) needs a FREE pool connection: when none is idle (the normal state of a pool
  // sized by demand: every open connection is a business transaction, or idle ones were
  // reaped by idleTimeoutMillis) it opens one, and connection setup counts against the
  // check's budget (statementTimeoutMs). Observed on this 2-core machine under CPU load
  // (two normal-priority burners, lease 2 s, heartbeat 500 ms, statementTimeoutMs 500,
  // shapes as in the previous test plus the long statement): opening the check's connection
  // took 571-946 ms, the heartbeat failed with "no statement of it seen running", and the
  // long-statement owner was aborted in about 1 run of 4 (also with a warm pool: check sent
  // 240 ms late by loop lag, answered in 243-409 ms). Related, same load: an owner running
  // queries with large results (50k rows each) was aborted in 1 full-file run of 3: while
  // the client still reads a result the server is already idle (no 'active' to see) and
  // the ReadyForQuery counts only from the query's send, so a heartbeat fails when the
  // client's reading outlasts waitMs. Deterministic reproduction here: new
  // connections after the first reach the server 1.5 s late (a remote server with TLS, or
  // a saturated host): the healthy owner's signal aborts although the server runs its
  // statement and nobody could take over. Before cd3813b it was never aborted. Suggested
  // fix: send the check at the heartbeat's start when the transaction's connection has a
  // statement in flight (pg's activeQuery is not the extend), and run checks on a
  // dedicated, kept-open monitoring connection (or pool.connect at engine start), so that
  // neither the wait nor a connection setup eats the lease.
  it('a new pool connection takes 1.5 s: an owner running one 3 s statement is not aborted', async () => {
    const proxy = await startSlowConnectProxy(1, 1_500);
    const pool = new pg.Pool({ connectionString: proxy.url, max: 8 });
    pool.on('error', () => {});
    const scope = randomName('scope');
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({
        pool,
        table,
        keyPrefix: randomName('r19slow'),
        statementTimeoutMs: 1_000,
      }),
      leaseMs: 2_000,
      heartbeatMs: 500,
      maxHoldMs: 60_000,
    });
    let signal: AbortSignal | undefined;
    try {
      const result = await engine.execute({ key: 'k', scope }, async ({ tx, fence, signal: s }) => {
        signal = s;
        await insertCharge(tx, charges, scope, fence);
        await tx.query("SET LOCAL statement_timeout = '30s'");
        await tx.query('SELECT pg_sleep(3)');
        return 'done';
      });
      console.info('slow connect', { aborted: signal?.aborted, connections: proxy.connections() });
      expect(result).toEqual({ value: 'done', replayed: false });
      expect(await fenceRows(scope)).toEqual([1]);
      expect(signal?.aborted).toBe(false);
    } finally {
      proxy.close();
      void pool.end().catch(() => {});
    }
  });
});

/**
 * A proxy in a child process (so that it forwards while this process is busy): the one
 * connection that sent `mark` falls silent (both ways, sockets kept open) right after the
 * server's ReadyForQuery that answers it was forwarded; every other connection passes.
 */
async function startChildMarkProxy(mark: string) {
  const script = `
    const net = require('node:net');
    const MARK = Buffer.from(${JSON.stringify(mark)});
    const RFQ = Buffer.from([0x5a, 0, 0, 0, 5]);
    const server = net.createServer((client) => {
      const upstream = net.createConnection({ host: ${JSON.stringify(url.hostname)}, port: ${Number(url.port || 5432)} });
      let marked = false, silent = false;
      client.on('data', (c) => { if (c.includes(MARK)) marked = true; if (!silent) upstream.write(c); });
      upstream.on('data', (c) => { if (silent) return; client.write(c); if (marked && c.includes(RFQ)) silent = true; });
      const end = () => { client.destroy(); upstream.destroy(); };
      client.on('close', end).on('error', end);
      upstream.on('close', () => { if (!silent) end(); }).on('error', () => { if (!silent) end(); });
    });
    server.listen(0, '127.0.0.1', () => process.stdout.write(String(server.address().port) + '\\n'));
    setTimeout(() => process.exit(0), 60000);
  `;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [chunk] = (await once(child.stdout!, 'data')) as [Buffer];
  return { url: viaProxy(Number(String(chunk).trim())), close: () => child.kill('SIGKILL') };
}

describe("the transaction's connection falls silent while the owner's pool answers", () => {
  // Was FINDING MEDIUM (the heartbeats judged the server's idle timer from ReadyForQuery
  // times, which a callback-style query's synchronous work made too young; the owner's signal
  // aborted ~200-400 ms after a duplicate took over). Heartbeats no longer judge the idle
  // timer: they renew the held lease through the pool, which a takeover honours. With the
  // transaction's connection silent (and the server ending the transaction at its idle limit)
  // but the owner's pool answering, the owner keeps renewing: no duplicate takes over while it
  // runs, and its signal does not abort. (The operation's next statement on tx fails; the key
  // is then released as for any transaction that did not commit.)
  for (const busyMs of [400, 0]) {
    it(`a callback-style query with ${busyMs} ms of synchronous work, then silence: every duplicate gets 409 well past the idle limit, the owner not aborted`, async () => {
      const MARK = 'pgrev19_rfq_mark';
      const proxy = await startChildMarkProxy(MARK);
      const ownerPool = new pg.Pool({ connectionString: proxy.url, max: 4 });
      ownerPool.on('error', () => {});
      const dupPool = makePool({ max: 4 });
      const keyPrefix = randomName('r19cut');
      const scope = randomName('scope');
      // Each heartbeat is a renewal through the pool: a lease a loaded machine's round trips fit.
      const engineOptions = { leaseMs: 2_000, heartbeatMs: 400, maxHoldMs: 60_000 };
      const owner = createPostgresIdempotency<string>({
        store: createPostgresStore({
          pool: ownerPool,
          table,
          keyPrefix,
          statementTimeoutMs: 1_500,
        }),
        ...engineOptions,
      });
      const duplicates = createPostgresIdempotency<string>({
        store: createPostgresStore({ pool: dupPool, table, keyPrefix }),
        ...engineOptions,
      });
      let aborted = false;
      try {
        const key = await holdForever(owner, scope, async ({ tx, fence, signal }) => {
          signal.addEventListener('abort', () => {
            aborted = true;
          });
          await insertCharge(tx, charges, scope, fence);
          await sleep(2_200); // past the stored lease (acquisition + 2 s)
          await new Promise<void>((resolve, reject) => {
            tx.query('SELECT 2', (error: Error | null) => {
              if (error) return reject(error);
              tx.query(`SELECT '${MARK}'`, () => {}); // the connection falls silent after it
              const s = performance.now();
              while (performance.now() - s < busyMs) {} // synchronous work in the callback
              resolve();
            });
          });
        });
        const { value, conflicts } = await untilTakenOver(
          duplicates,
          { key, scope },
          async () => 'duplicate',
          // Past the idle limit (about 2.7 s) that ends the silent transaction on the server.
          { limitMs: 3_500, pauseMs: 50 },
        );
        expect(value).toBeUndefined();
        expect(conflicts).toBeGreaterThan(5);
        expect(aborted).toBe(false);
      } finally {
        proxy.close();
        await dupPool.end();
        void ownerPool.end().catch(() => {});
      }
    });
  }
});

describe("the heartbeat's extend runs inside the operation's transaction", () => {
  const role = randomName('pgrev19_tenant');
  beforeAll(async () => {
    await catalogChange(raw, `CREATE ROLE ${role} NOLOGIN`);
    await catalogChange(raw, `GRANT USAGE ON SCHEMA "${schema}" TO ${role}`);
    await catalogChange(raw, `GRANT SELECT, INSERT ON ${charges} TO ${role}`);
    await catalogChange(raw, `GRANT USAGE ON ALL SEQUENCES IN SCHEMA "${schema}" TO ${role}`);
  });
  afterAll(async () => {
    await dropRole(raw, role); // tried again on "tuple concurrently updated" (see pg-env)
  });

  // FINDING (MEDIUM): since cd3813b every heartbeat sends an extend ON the operation's
  // transaction, interleaved with the operation's own statements, inside the operation's
  // current (sub)transaction. A failure of that injected statement aborts the operation's
  // subtransaction: the operation's NEXT statement fails with 25P02 ("current transaction is
  // aborted"), for no fault of its own, and only when a heartbeat happened to land meanwhile
  // (intermittent: long operations only). Reproduced with the common row-level-security
  // pattern `SET LOCAL ROLE <tenant role>` ... `RESET ROLE` (the completion after RESET ROLE
  // works): the heartbeat's extend runs as the tenant role, gets "permission denied" on the
  // record table, and the operation's second insert fails. Same with DEALLOCATE ALL on tx
  // (the named extend statement is gone), an operation's tiny SET LOCAL statement_timeout,
  // SET LOCAL transaction_read_only (same mechanism, not run here). Suggested fix: never let the ping fail inside the
  // operation's subtransaction: send it as `SAVEPOINT idem_ping; <extend>; RELEASE` with a
  // ROLLBACK TO idem_ping on error (or a SECURITY DEFINER extend function with an EXCEPTION
  // block, sent unnamed), or ping with a statement that cannot fail (an empty query also
  // gets a ReadyForQuery) and renew the stored lease only where it matters.
  // FIXED: the heartbeat's statement on the transaction is now `SELECT 1`, which cannot fail
  // for a role (the lease is renewed through the pool).
  it('SET LOCAL ROLE <tenant> ... RESET ROLE around the writes: the operation is not broken by a heartbeat', async () => {
    const pool = makePool({ max: 4 });
    const scope = randomName('scope');
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({
        pool,
        table,
        keyPrefix: randomName('r19role'),
        statementTimeoutMs: 500,
      }),
      leaseMs: 1_000,
      heartbeatMs: 200,
      maxHoldMs: 60_000,
    });
    let secondWrite: unknown = 'not reached';
    try {
      const outcome = await engine
        .execute({ key: 'k', scope }, async ({ tx, fence }) => {
          await tx.query(`SET LOCAL ROLE ${role}`);
          await insertCharge(tx, charges, scope, fence);
          await sleep(600); // e.g. a remote call; heartbeats fire meanwhile
          secondWrite = await insertCharge(tx, charges, scope, fence).then(
            () => 'ok',
            (error: { code?: string }) => error.code,
          );
          await tx.query('RESET ROLE');
          return 'done';
        })
        .then(
          (r) => r,
          (error: unknown) => String(error),
        );
      console.info('SET LOCAL ROLE', { secondWrite, outcome });
      expect(secondWrite).toBe('ok');
      expect(outcome).toEqual({ value: 'done', replayed: false });
      expect(await fenceRows(scope)).toEqual([1, 1]);
    } finally {
      await pool.end();
    }
  });

  // Control (held): the same operation without a heartbeat inside (it ends before the first
  // heartbeat) completes, two rows: the role switch itself is fine for the engine.
  it('the same operation, shorter than a heartbeat: completes, two rows', async () => {
    const pool = makePool({ max: 4 });
    const scope = randomName('scope');
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool, table, keyPrefix: randomName('r19role2') }),
      leaseMs: 1_000,
      heartbeatMs: 200,
    });
    try {
      const outcome = await engine.execute({ key: 'k', scope }, async ({ tx, fence }) => {
        await tx.query(`SET LOCAL ROLE ${role}`);
        await insertCharge(tx, charges, scope, fence);
        await insertCharge(tx, charges, scope, fence);
        await tx.query('RESET ROLE');
        return 'done';
      });
      expect(outcome).toEqual({ value: 'done', replayed: false });
      expect(await fenceRows(scope)).toEqual([1, 1]);
    } finally {
      await pool.end();
    }
  });
});

describe('bad input: the timing at the bounds', () => {
  // FIXED (was FINDING LOW; such a lease is now refused): core accepts leases up to 2^31-1 ms
  // (MAX_TIMER_MS), but the idle limit sent was capped at the same 2^31-1 ms (PostgreSQL's
  // maximum for the setting): for a lease within its margin of the cap (about 24.8 days) the
  // idle limit was silently shorter than computed.
  it('the largest lease core accepts: refused (InvalidInputError), never an idle limit cut short', () => {
    const leaseMs = 2 ** 31 - 1;
    expect(() =>
      transactionIdleLimit({
        leaseMs,
        heartbeatMs: Math.floor(leaseMs / 3),
        storeTimeoutMs: 5_000,
      }),
    ).toThrow(InvalidInputError);
    expect(() =>
      createPostgresIdempotency({
        store: createPostgresStore({ pool: raw, table }),
        leaseMs,
        storeTimeoutMs: 5_000,
      }),
    ).toThrow(InvalidInputError);
    // The largest that fits is sent as computed.
    const fits = 2 ** 31 - 1 - 1_000 - 2 * 5_000 - 5;
    const limit = transactionIdleLimit({
      leaseMs: fits,
      heartbeatMs: Math.floor(fits / 3),
      storeTimeoutMs: 5_000,
    });
    const sent = Number(/= (\d+)$/.exec(idleLimit(limit))?.[1]);
    expect(sent).toBe(Math.ceil(limit));
  });

  // Held: for ordinary settings the idle limit is the lease, a quarter of it (at most 1 s),
  // twice core's grace and 5 ms, and the statement sent says so.
  it('ordinary settings: idle limit = lease + min(1 s, lease / 4) + 2 grace + 5, sent as is', () => {
    for (const [leaseMs, heartbeatMs, storeTimeoutMs] of [
      [1_000, 200, 5_000],
      [30_000, 10_000, 5_000],
      [100, 30, 5_000],
      [60_000, false, 2_000],
    ] as const) {
      const limit = transactionIdleLimit({ leaseMs, heartbeatMs, storeTimeoutMs });
      const grace = Math.min(storeTimeoutMs, Math.max(10, (heartbeatMs || 0) / 5));
      expect(limit).toBe(leaseMs + Math.min(1_000, leaseMs / 4) + 2 * grace + 5);
      expect(idleLimit(limit)).toBe(
        `SET LOCAL idle_in_transaction_session_timeout = ${Math.ceil(limit)}`,
      );
    }
  });
});

/**
 * One owner (lease 1 s, heartbeat 200 ms) behind a ~400 KB/s uplink sends one statement of
 * about 1.2 MB: a parameter (extended protocol: Parse arrives first) or a literal (one simple
 * Query message).
 */
async function slowUpload(asParameter: boolean) {
  const proxy = await startThrottledProxy(20_000);
  const pool = new pg.Pool({ connectionString: proxy.url, max: 4 });
  pool.on('error', () => {});
  // Warm (the heartbeats' pool check must not wait for a connection: finding above).
  const warm = await Promise.all([pool.connect(), pool.connect(), pool.connect()]);
  for (const c of warm) c.release();
  const scope = randomName('scope');
  const engine = createPostgresIdempotency<string>({
    store: createPostgresStore({
      pool,
      table,
      keyPrefix: randomName('r19upload'),
      // Limits a loaded machine's renewals meet (the upload still outlasts the idle limit).
      statementTimeoutMs: 1_500,
    }),
    leaseMs: 2_000,
    heartbeatMs: 400,
    maxHoldMs: 60_000,
  });
  let signal: AbortSignal | undefined;
  let upload: unknown;
  const big = 'x'.repeat(1_200_000);
  try {
    const outcome = await engine
      .execute({ key: 'k', scope }, async ({ tx, fence, signal: s }) => {
        signal = s;
        await insertCharge(tx, charges, scope, fence);
        const started = performance.now();
        const sent = asParameter
          ? tx.query('SELECT length($1::text) AS n', [big])
          : tx.query(`SELECT length('${big}') AS n`);
        upload = await sent.then(
          (r) => ({ n: r.rows[0].n, ms: Math.round(performance.now() - started) }),
          (error: Error) => ({ error: error.message, ms: Math.round(performance.now() - started) }),
        );
        return 'done';
      })
      .then(
        (r) => r,
        (error: unknown) => String(error),
      );
    return { upload, outcome, aborted: signal?.aborted };
  } finally {
    proxy.close();
    void pool.end().catch(() => {});
  }
}

describe('a statement whose upload outlasts the idle limit', () => {
  // FINDING (LOW, limitation to document): PostgreSQL arms the idle-in-transaction timer when
  // it sends ReadyForQuery and disarms it only once the NEXT message has been read whole. A
  // simple-protocol statement (no parameters: one Query message, e.g. a large multi-row
  // INSERT built as text) whose message takes longer than the idle limit to arrive (slow or
  // congested uplink) is killed by the server half-way through its upload ("terminating
  // connection due to idle-in-transaction timeout") although the owner is healthy and
  // sending; the heartbeats see the backend "idle in transaction" and abort the signal first
  // (safety holds), but the healthy owner loses its work, deterministically, for any such
  // statement slower to send than lease + look-back + grace. Reproduced: a 1.2 MB literal at
  // ~400 KB/s, lease 1 s. (The same payload as a parameter is fine, next test: Parse arrives
  // first and the backend stays active without an idle timer while Bind trickles in.)
  // Suggested fix: document it (send large payloads as parameters or with COPY, or in
  // statements each quicker to send than the lease), or let the idle limit be raised.
  // FIXED (upload guard, src/upload-guard.ts): a statement's first message of 64 KiB or more
  // is sent behind a Flush (read with the idle timer off) once a guard runs on another
  // connection, which ends the transaction when the owner's leases pass, as the idle limit
  // would have for an owner frozen or gone mid-upload (test/upload-guard.test.ts: the owner's
  // uplink stops mid-upload, the guard ends its transaction, the duplicate takes over after
  // its signal aborted). Without a pool connection free at once for the guard, as before.
  it('a 1.2 MB literal (simple query) at ~400 KB/s, lease 1 s: the healthy owner completes, not aborted', async () => {
    const r = await slowUpload(false);
    console.info('slow upload, literal', r);
    expect(r.upload).toMatchObject({ n: 1_200_000 });
    expect(r.aborted).toBe(false);
    expect(r.outcome).toEqual({ value: 'done', replayed: false });
  });

  // Held: the same payload as a parameter (extended protocol) takes ~3 s to send: the
  // backend is active meanwhile, the owner is not aborted and completes.
  it('the same 1.2 MB as a parameter (extended protocol): completes and commits', async () => {
    const r = await slowUpload(true);
    console.info('slow upload, parameter', r);
    expect(r.upload).toMatchObject({ n: 1_200_000 });
    expect((r.upload as { ms: number }).ms).toBeGreaterThan(2_000);
    // Committed: the server never ended the transaction mid-upload. (Its signal may abort on a
    // loaded machine: the held lease's renewals cross the same throttled link.)
    expect(r.outcome).toEqual({ value: 'done', replayed: false });
  });
});
