import { once } from 'node:events';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { InProgressError } from '@idem/core';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BusinessTransaction } from '../src/business-transaction.js';
import {
  createPostgresIdempotency,
  createPostgresStore,
  TransactionNotCommittedError,
} from '../src/index.js';
import { catalogChange, DATABASE_URL, dropRole, makePool, randomName, sleep } from './pg-env.js';
import { cutOffOwner, holdForever, insertCharge, longStatementOwner } from './take-over.js';
import { startProxy } from './tcp-proxy.js';

/**
 * Adversarial review (pgrev17) of the heartbeat-evidence design of cd3813b, since replaced by
 * the held lease (BusinessTransaction.heartbeat renews it through the pool). The comments keep
 * what each finding was against; the assertions state the guarantee, tested against the held
 * lease now.
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const charges = `"${schema}".pgrev17_charges`;
const raw = makePool({ max: 3 });
const url = new URL(DATABASE_URL);
const MARK = 'pgrev17_mark_this_connection';

beforeAll(async () => {
  await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
});
afterAll(() => raw.end());

/**
 * A TCP proxy in front of PostgreSQL whose faults apply to ONE connection only: the one that
 * carried `MARK` (sent by the operation on `tx`). The others (the pool's, used by the
 * heartbeat's activity check) keep working, as when one TCP flow dies (a NAT/firewall entry
 * dropped, a half-open connection) or one connection's answers are delayed.
 *
 * - `silent`: the marked connection forwards nothing either way (the socket stays open);
 * - `lagMs`: answers (server -> client) on the marked connection are delayed that long.
 */
interface MarkProxy {
  port: number;
  silent: boolean;
  lagMs: number;
  /** Called when a delayed answer chunk was delivered to the client. */
  onDelayedDelivery?: () => void;
  close(): void;
}

async function startMarkProxy(): Promise<MarkProxy> {
  const sockets = new Set<Socket>();
  let marked: Socket | undefined;
  const proxy: MarkProxy = {
    port: 0,
    silent: false,
    lagMs: 0,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
  const server: Server = createServer((client) => {
    const upstream = createConnection({ host: url.hostname, port: Number(url.port || 5432) });
    sockets.add(client);
    sockets.add(upstream);
    client.on('data', (chunk: Buffer) => {
      if (chunk.includes(MARK)) marked = client;
      if (marked === client && proxy.silent) return;
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (marked === client && proxy.silent) return;
      if (marked === client && proxy.lagMs > 0) {
        setTimeout(() => {
          if (proxy.silent) return;
          client.write(chunk);
          proxy.onDelayedDelivery?.();
        }, proxy.lagMs);
        return;
      }
      client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    // A blackhole: the server closing a silent connection is not seen by the client either.
    const upstreamEnd = () => {
      if (marked === client && proxy.silent) upstream.destroy();
      else end();
    };
    upstream.on('close', upstreamEnd).on('error', upstreamEnd);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  proxy.port = (server.address() as { port: number }).port;
  return proxy;
}

function viaProxy(port: number): string {
  const via = new URL(DATABASE_URL);
  via.hostname = '127.0.0.1';
  via.port = String(port);
  return via.toString();
}

describe("only the transaction's connection falls silent (the owner's pool answers)", () => {
  // Were FINDING HIGH / MEDIUM against the heartbeats' evidence (a client-side query_timeout
  // taken for the server's answer; core's grace past the estimate against an idle limit of
  // exactly the lease): with the transaction's one connection silent, the server ended the
  // transaction at its idle limit and a duplicate took over while the owner ran on unaborted.
  // Heartbeats now renew the held lease through the pool, which a takeover honours: while the
  // owner's pool answers, it keeps renewing, so no duplicate takes over and its signal does not
  // abort (its transaction is gone: the operation's next statement fails, nothing commits).
  it('with a client query_timeout: no duplicate takes over, the owner not aborted', async () => {
    await silentTxConnection({ queryTimeoutMs: 900 });
  });

  it("core's grace past the estimate (lease 4.1 s, heartbeat 3 s): no duplicate takes over, the owner not aborted", async () => {
    await silentTxConnection({
      queryTimeoutMs: undefined,
      options: { leaseMs: 4_100, heartbeatMs: 3_000, maxHoldMs: 60_000 },
      pauseMs: 20,
    });
  });

  it('without a client query_timeout: no duplicate takes over, the owner not aborted', async () => {
    await silentTxConnection({ queryTimeoutMs: undefined });
  });
});

async function silentTxConnection({
  queryTimeoutMs,
  options = { leaseMs: 1_000, heartbeatMs: 300, maxHoldMs: 60_000 },
  pauseMs = 100,
}: {
  queryTimeoutMs: number | undefined;
  options?: { leaseMs: number; heartbeatMs: number; maxHoldMs: number };
  pauseMs?: number;
}): Promise<void> {
  const proxy = await startMarkProxy();
  try {
    const { abortedAt } = await cutOffOwner({
      ownerUrl: viaProxy(proxy.port),
      // query_timeout on the client: node-postgres gives the silent connection's statements up.
      poolConfig: queryTimeoutMs === undefined ? {} : { query_timeout: queryTimeoutMs },
      statementTimeoutMs: 900,
      engine: options,
      charges,
      table,
      mark: `SELECT '${MARK}'`,
      cutOff: async () => {
        proxy.silent = true;
      },
      pauseMs,
      // Past the server's idle limit (which ends the silent transaction) by a lease and more.
      noTakeoverForMs: 2 * options.leaseMs + 1_500,
    });
    expect(abortedAt()).toBeUndefined();
  } finally {
    proxy.close();
  }
}

describe('healthy owners', () => {
  // FIXED: the renewals go over the engine's own renewal connection, outside the pool
  // (src/renewal-connection.ts). FINDING (MEDIUM) against the evidence design, then against
  // the held lease renewed through the pool: the activity check needs a connection of the SAME pool the business
  // transactions hold. When every connection is held by a transactional execution whose
  // statement outlasts 250 ms (a pool sized to the concurrency, a burst of slow requests),
  // the check waits for a connection until statementTimeoutMs and answers "cannot tell": the
  // heartbeats fail and every one of these healthy owners has its signal aborted
  // (LeaseLostError) although the server runs their statements and no duplicate can take
  // over (a duplicate gets 409 meanwhile). Before the change they answered OK. An operation
  // that honours its signal is thrown away and its transaction rolled back, under exactly
  // the load where that hurts most. Same thing as the long-statement case of
  // silent-owner-signal.test.ts, with max: 2 instead of 4.
  it('a pool whose every connection runs a long statement of an execution: no signal aborts', async () => {
    const pool = makePool({ max: 2, query_timeout: 20_000 });
    const keyPrefix = randomName('r17full');
    const scope = randomName('scope');
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool, table, keyPrefix, statementTimeoutMs: 500 }),
      leaseMs: 1_000,
      heartbeatMs: 200,
    });
    const dupPool = makePool({ max: 2 });
    const duplicates = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool: dupPool, table, keyPrefix }),
      leaseMs: 1_000,
      heartbeatMs: 200,
    });
    const signals: AbortSignal[] = [];
    try {
      const runs = ['a', 'b'].map((key) =>
        engine.execute({ key, scope }, async ({ tx, fence, signal }) => {
          signals.push(signal);
          await insertCharge(tx, charges, scope, fence);
          await tx.query("SET LOCAL statement_timeout = '30s'");
          await tx.query('SELECT pg_sleep(2.5)');
          return key;
        }),
      );
      // Settled from the start: a run that fails while an assertion below fails first is no
      // unhandled rejection (which keeps CI from rerunning the file alone).
      const settled = Promise.allSettled(runs);
      await sleep(1_800);
      // Nobody can take over: the transactions hold the rows.
      await expect(
        duplicates.execute({ key: 'a', scope }, async () => 'duplicate'),
      ).rejects.toBeInstanceOf(InProgressError);
      const results = await settled;
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
      expect(signals.map((s) => s.aborted)).toEqual([false, false]);
    } finally {
      await pool.end();
      await dupPool.end();
    }
  });
});

describe("answers that come back late, then silence (the transaction's connection only)", () => {
  // Was FINDING MEDIUM (a heartbeat that joined an earlier one's extend counted its late answer
  // from its own start). Heartbeats no longer count in-transaction answers: the held lease is
  // renewed through the pool, so with only the transaction's connection lagging, then silent,
  // the owner keeps the key and its signal (its transaction is gone; nothing commits).
  it('no duplicate takes over while the owner renews; the owner not aborted', async () => {
    const proxy = await startMarkProxy();
    const options = { leaseMs: 1_000, heartbeatMs: 300, maxHoldMs: 60_000 };
    try {
      const { abortedAt } = await cutOffOwner({
        ownerUrl: viaProxy(proxy.port),
        statementTimeoutMs: 2_000,
        engine: options,
        charges,
        table,
        mark: `SELECT '${MARK}'`,
        cutOff: async () => {
          proxy.lagMs = 780;
          proxy.onDelayedDelivery = () => {
            proxy.silent = true;
          };
        },
        pauseMs: 20,
        noTakeoverForMs: 3_500,
      });
      expect(abortedAt()).toBeUndefined();
    } finally {
      proxy.close();
    }
  });
});

describe('the activity check under a pool that switches role', () => {
  const role = randomName('pgrev17_app');
  beforeAll(async () => {
    await catalogChange(raw, `CREATE ROLE ${role} NOLOGIN`);
    await catalogChange(raw, `GRANT USAGE ON SCHEMA "${schema}" TO ${role}`);
    await catalogChange(raw, `GRANT ALL ON ALL TABLES IN SCHEMA "${schema}" TO ${role}`);
    await catalogChange(raw, `GRANT ALL ON ALL SEQUENCES IN SCHEMA "${schema}" TO ${role}`);
    await catalogChange(raw, `GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA "${schema}" TO ${role}`);
  });
  afterAll(async () => {
    await dropRole(raw, role); // tried again on "tuple concurrently updated" (see pg-env)
  });

  // FINDING (LOW): pg_stat_activity shows `state`/`backend_xid` of a session only to roles
  // with the privileges of its SESSION user (or pg_read_all_stats). A pool that runs
  // `SET ROLE <least-privileged role>` on connect (a common least-privilege / RLS setup) sees
  // NULL for every session, its own included: the check never finds the running statement,
  // and every owner whose statement outlasts the lease is aborted although it is healthy
  // (and nobody can take over). The README says the pool's role "can read for its own
  // sessions", which is not true here.
  // FIXED: heartbeats no longer ask pg_stat_activity (the held lease is renewed through the pool).
  it('SET ROLE on connect: an owner running one long statement is not aborted', async () => {
    const pool = makePool({ max: 4, query_timeout: 20_000 });
    pool.on('connect', (client) => {
      client.query(`SET ROLE ${role}`).catch(() => {});
    });
    try {
      const { result, aborted } = await longStatementOwner(
        pool,
        { table, charges, seconds: 2.2 },
        async (tx) => {
          expect((await tx.query('SELECT current_user AS u')).rows[0].u).toBe(role);
        },
      );
      expect(result).toEqual({ value: 'done', replayed: false });
      expect(aborted).toBe(false);
    } finally {
      await pool.end();
    }
  });
});

describe('more attacks (held unless it.fails)', () => {
  it('serializable: an owner running one long statement is seen running (xid matches), not aborted', async () => {
    const pool = makePool({ max: 4, query_timeout: 20_000 });
    try {
      const { result, aborted } = await longStatementOwner(pool, {
        table,
        charges,
        seconds: 2.2,
        isolationLevel: 'serializable',
      });
      expect(result).toEqual({ value: 'done', replayed: false });
      expect(aborted).toBe(false);
    } finally {
      await pool.end();
    }
  });

  // FIXED (was FINDING MEDIUM; a failed transaction renews through the store, owner-checked):
  // after an error inside the transaction (the operation caught it and goes
  // on: the client reports status 'E'), PostgreSQL has ALREADY aborted the transaction: its
  // row lock is released (pg_stat_activity: 'idle in transaction (aborted)', backend_xid
  // NULL) and the SET LOCAL idle limit is undone. Yet rowState() still says 'held', so the
  // heartbeats keep going into the transaction; their extend is answered with an error
  // (25P02), which heartbeat() counts as "answered" -> OK. Nothing renews the stored lease,
  // the row is free: a duplicate takes over one lease after the acquisition while the owner
  // keeps running with an unaborted signal (its completion then gets "taken over"). Nothing
  // of the owner commits (no double business row), but the signal guarantee is broken and any
  // side effect outside the database runs beside the duplicate's.
  // Since the operation runs inside the engine's savepoint, a failed statement leaves the
  // transaction and its row lock alive: nobody can take over, and the owner is not aborted.
  it('a transaction in failed state (the operation caught an error): no takeover while it runs, the owner not aborted', async () => {
    const pool = makePool({ max: 4 });
    const keyPrefix = randomName('r17fail');
    const scope = randomName('scope');
    // Limits a loaded machine's store calls meet.
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool, table, keyPrefix, statementTimeoutMs: 2_000 }),
      leaseMs: 1_000,
      heartbeatMs: 200,
    });
    let signal: AbortSignal | undefined;
    let started!: () => void;
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    try {
      const first = engine.execute({ key: 'k', scope }, async ({ tx, signal: s }) => {
        signal = s;
        await tx.query('SELECT 1/0').catch(() => {});
        started();
        await sleep(2_500); // the operation goes on (e.g. a remote call) after the caught error
        return 'done';
      });
      first.catch(() => {});
      await Promise.race([running, first]);
      await sleep(1_500); // past the stored lease (the acquisition's)
      const duplicate = await engine
        .execute({ key: 'k', scope }, async () => 'duplicate')
        .then(
          (result) => result,
          (error: unknown) => error,
        );
      expect(duplicate).toBeInstanceOf(InProgressError);
      expect(signal?.aborted).toBe(false);
      // Its transaction failed: nothing recorded, the key given back.
      await expect(first).rejects.toBeInstanceOf(TransactionNotCommittedError);
    } finally {
      await pool.end();
    }
  });

  it('bounded: in full silence every heartbeat settles within the check delay + statementTimeoutMs (+ slack)', async () => {
    const proxy = await startProxy({ host: url.hostname, port: Number(url.port || 5432) });
    const ownerPool = new pg.Pool({ connectionString: viaProxy(proxy.port), max: 4 });
    ownerPool.on('error', () => {});
    const durations: number[] = [];
    const original = BusinessTransaction.prototype.heartbeat;
    BusinessTransaction.prototype.heartbeat = async function (this: BusinessTransaction, input) {
      const startedAt = performance.now();
      try {
        return await original.call(this, input);
      } finally {
        durations.push(performance.now() - startedAt);
      }
    };
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({
        pool: ownerPool,
        table,
        keyPrefix: randomName('r17bound'),
        statementTimeoutMs: 500,
      }),
      leaseMs: 1_500,
      heartbeatMs: 300,
    });
    let aborted!: () => void;
    const abortedP = new Promise<void>((resolve) => {
      aborted = resolve;
    });
    try {
      // Retried under a fresh key when the transaction could not start (a loaded machine).
      await holdForever(engine, randomName('scope'), async ({ tx, signal }) => {
        await tx.query('SELECT 1');
        signal.addEventListener('abort', () => aborted());
        proxy.mode = 'silent';
      });
      await Promise.race([abortedP, sleep(4_000)]);
      await sleep(700); // the heartbeat in flight at the abort settles
      expect(durations.length).toBeGreaterThan(0);
      // The pool check is asked after min(250, lease / 8) ms and bounded by the statement limit.
      expect(Math.max(...durations)).toBeLessThan(1_500 / 8 + 500 + 250);
    } finally {
      BusinessTransaction.prototype.heartbeat = original;
      await proxy.close();
      void ownerPool.end().catch(() => {});
    }
  });
  // FIXED (was FINDING LOW; the check also counts the session gone idle in the transaction
  // since the heartbeat began, less a slack the idle limit has): an operation that queues many
  // short statements on tx at once (node-postgres
  // sends them one after the other; it prints a deprecation notice for it) keeps the
  // heartbeat's extend queued behind all of them for longer than the lease, and between two of
  // them the backend is 'idle in transaction', which is what the single-instant activity check
  // mostly samples: the heartbeats fail, the healthy owner's signal aborts (it then completes
  // and commits normally; the server never came near its idle limit).
  it('many quick statements queued at once on tx (the extend waits behind them): not aborted', async () => {
    const pool = makePool({ max: 4, query_timeout: 20_000 });
    const keyPrefix = randomName('r17queue');
    const scope = randomName('scope');
    // Limits a loaded machine's store calls meet.
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool, table, keyPrefix, statementTimeoutMs: 2_000 }),
      leaseMs: 1_000,
      heartbeatMs: 200,
    });
    let signal: AbortSignal | undefined;
    let took = 0;
    try {
      const result = await engine.execute({ key: 'k', scope }, async ({ tx, signal: s }) => {
        signal = s;
        const started = performance.now();
        // Queued in node-postgres' client queue, sent one after the other: the backend is
        // idle in transaction between them, the heartbeat's extend is queued behind all.
        // (Short sleeps on the server, not tens of thousands of SELECT 1: those cost the
        // client seconds of CPU, and a loaded machine's stall of the event loop between two of
        // them let the server's idle limit end the transaction, or the pool's query_timeout,
        // counted from the call, fail the last ones.)
        const all: Promise<unknown>[] = [];
        for (let i = 0; i < 250; i++) all.push(tx.query('SELECT pg_sleep(0.01)'));
        await Promise.all(all);
        took = performance.now() - started;
        return 'done';
      });
      expect(result).toEqual({ value: 'done', replayed: false });
      expect(took).toBeGreaterThan(1_500);
      expect(signal?.aborted).toBe(false);
    } finally {
      await pool.end();
    }
  });
});
