import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { DATABASE_URL, makePool, randomName } from './pg-env.js';
import { holdForever, insertCharge, untilTakenOver } from './take-over.js';
import { startProxy } from './tcp-proxy.js';

/**
 * Adversarial review (wt/pgrev): an owner that dies without the server noticing while its
 * business transaction holds the record (a blackholed network, a frozen process). The row
 * lock must not outlive the lease by more than the server needs to notice: the engine bounds
 * the transaction's idle time by the lease itself, and its heartbeats show the server that
 * a live owner is still there.
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const charges = `"${schema}".dead_owner_charges`;
const raw = makePool({ max: 2 });
const url = new URL(DATABASE_URL);

beforeAll(async () => {
  await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
});
afterAll(() => raw.end());

describe('the owner of a held record goes silent', () => {
  it('pool without idle_in_transaction_session_timeout: a duplicate takes over once the lease passed, one row', async () => {
    const proxy = await startProxy({ host: url.hostname, port: Number(url.port || 5432) });
    const via = new URL(DATABASE_URL);
    via.hostname = '127.0.0.1';
    via.port = String(proxy.port);
    // What a user who did not spread recommendedPoolConfig() has: no server-side idle limit.
    const ownerPool = new pg.Pool({ connectionString: via.toString(), max: 4 });
    ownerPool.on('error', () => {});
    const dupPool = makePool({ max: 4 });
    const keyPrefix = randomName('dead');
    const scope = randomName('scope');
    const options = { leaseMs: 1_000, heartbeatMs: 200 };
    const owner = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool: ownerPool, table, keyPrefix, statementTimeoutMs: 500 }),
      ...options,
    });
    const duplicates = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool: dupPool, table, keyPrefix }),
      ...options,
    });
    const insert = (tx: pg.PoolClient, fence: number) => insertCharge(tx, charges, scope, fence);
    try {
      // Its transaction may fail to start within its 500 ms limits on a loaded machine: then
      // it starts again under a fresh key (see holdForever).
      const key = await holdForever(owner, scope, async ({ tx, fence }) => {
        await insert(tx, fence);
      });
      // The network between the owner and the server goes silent (nothing reaches either).
      proxy.mode = 'silent';
      // Bounded: without a limit on the server, the row stays locked until the socket dies
      // (hours with default TCP keep-alive), and every duplicate gets 409.
      const { value: answer, conflicts } = await untilTakenOver(
        duplicates,
        { key, scope },
        ({ tx, fence }) => insert(tx, fence),
        { limitMs: 12_000, pauseMs: 200 },
      );
      expect(answer, `still 409 after ${conflicts} tries`).toBeDefined();
      const { rows } = await raw.query(`SELECT id, fence FROM ${charges} WHERE scope = $1`, [
        scope,
      ]);
      expect(rows.map((r) => [String(r.id), Number(r.fence)])).toEqual([[answer, 2]]);
    } finally {
      await proxy.close();
      await dupPool.end();
      void ownerPool.end().catch(() => {});
    }
  });
});

describe('the maximum hold passes while a statement of the operation runs', () => {
  it('the statement is ended with the transaction: the key goes back at once, not when it finishes', async () => {
    const pool = makePool({ max: 4 });
    const keyPrefix = randomName('hold');
    const scope = randomName('scope');
    const store = createPostgresStore({ pool, table, keyPrefix });
    const options = { leaseMs: 1_000, heartbeatMs: 100, maxHoldMs: 300 };
    const engine = createPostgresIdempotency<string>({ store, ...options });
    let pid: number | undefined;
    try {
      const first = await engine
        .execute({ key: 'k', scope }, async ({ tx, fence }) => {
          const { rows } = await tx.query(
            `INSERT INTO ${charges} (scope, fence) VALUES ($1, $2) RETURNING pg_backend_pid() AS pid`,
            [scope, fence],
          );
          pid = rows[0].pid;
          // A long statement, allowed by the operation itself.
          await tx.query("SET LOCAL statement_timeout = '60s'");
          await tx.query('SELECT pg_sleep(30)');
          return 'slept';
        })
        .then(
          () => 'committed',
          (error: unknown) => error,
        );
      expect(first).not.toBe('committed');
      // Bounded: the dropped connection alone leaves pg_sleep running (and the row locked)
      // for 30 s, and every retry meanwhile gets 409.
      const { value: retry } = await untilTakenOver(
        engine,
        { key: 'k', scope },
        async ({ tx, fence }) => {
          await insertCharge(tx, charges, scope, fence);
          return 'retried';
        },
        { limitMs: 6_000, pauseMs: 200 },
      );
      expect(retry).toBe('retried');
      const { rows } = await raw.query(`SELECT fence FROM ${charges} WHERE scope = $1`, [scope]);
      expect(rows.map((r) => Number(r.fence))).toEqual([2]);
    } finally {
      if (pid !== undefined) await raw.query('SELECT pg_terminate_backend($1)', [pid]);
      await pool.end();
    }
  });
});
