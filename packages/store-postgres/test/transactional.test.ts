import {
  everythingFinal,
  InvalidInputError,
  LeaseLostError,
  ReplayedFailureError,
} from '@idem/core';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  createPostgresIdempotency,
  createPostgresStore,
  TransactionNotCommittedError,
} from '../src/index.js';
import { countStatements, traceConnections } from './counted-pool.js';
import { makePool, randomName, sleep } from './pg-env.js';

const schema = inject('pgSchema');
const table = inject('pgTable');
const charges = `"${schema}".tx_charges`;
const pool = makePool({ max: 8 });
const raw = makePool({ max: 2 });

beforeAll(async () => {
  await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, key text NOT NULL, amount int NOT NULL, fence bigint NOT NULL)`);
});
afterAll(async () => {
  await pool.end();
  await raw.end();
});

/** The lease of the takeover test's two executions. */
const LEASE_MS = 2_000;

/** A fresh engine and scope; `charge` inserts one business row in the transaction. */
function setup(
  extra: Partial<Parameters<typeof createPostgresIdempotency<{ id: string }>>[0]> = {},
) {
  const keyPrefix = randomName('tx');
  const store = createPostgresStore({ pool, table, keyPrefix });
  const engine = createPostgresIdempotency<{ id: string }>({ store, heartbeatMs: false, ...extra });
  const scope = randomName('scope');
  let runs = 0;
  const charge =
    (key: string, after?: (tx: pg.PoolClient) => Promise<void>) =>
    async ({ tx, fence }: { tx: pg.PoolClient; fence: number }) => {
      runs++;
      const { rows } = await tx.query(
        `INSERT INTO ${charges} (scope, key, amount, fence) VALUES ($1, $2, 500, $3) RETURNING id`,
        [scope, key, fence],
      );
      await after?.(tx);
      return { id: String(rows[0].id) };
    };
  const rows = async (key: string) =>
    Number(
      (
        await raw.query(`SELECT count(*) FROM ${charges} WHERE scope = $1 AND key = $2`, [
          scope,
          key,
        ])
      ).rows[0].count,
    );
  return { store, keyPrefix, engine, scope, charge, rows, runs: () => runs };
}

describe('transactional execute', () => {
  it('commits the business row and the record together; a retry replays without running', async () => {
    const counted = makePool({ max: 4 });
    const onConnection = traceConnections(counted, (text) =>
      /^BEGIN .*; SELECT .* FOR UPDATE; SET LOCAL idle_in_transaction_session_timeout = \d+; SAVEPOINT idem_operation$/.test(
        text,
      )
        ? 'BEGIN+lock'
        : text.split(' ')[0]!,
    );
    try {
      const store = createPostgresStore({ pool: counted, table, keyPrefix: randomName('rt') });
      const engine = createPostgresIdempotency<{ id: string }>({ store, heartbeatMs: false });
      const t = setup();
      const sent = countStatements(counted);
      const first = await engine.execute({ key: 'k', scope: t.scope }, t.charge('k'));
      expect(first.replayed).toBe(false);
      // The acquire through the pool; then on the transaction's connection BEGIN with the
      // record's lock in the same round trip, the operation's INSERT, the completion and
      // COMMIT: idem's own cost is the 2 round trips of any first execution (acquire +
      // complete), BEGIN and COMMIT are the transaction's.
      expect(sent.take()).toEqual(['acquire']);
      expect(onConnection.splice(0)).toEqual([
        'acquire',
        'BEGIN+lock',
        'INSERT',
        // The owner-checked completion, applied only inside the transaction BEGIN opened.
        'completeInTx',
        'COMMIT',
      ]);
      expect(await t.rows('k')).toBe(1);
      expect((await store.get(storageKeyOf(t.scope, 'k')))?.status).toBe('completed');
      sent.take();
      onConnection.length = 0;
      const again = await engine.execute({ key: 'k', scope: t.scope }, t.charge('k'));
      expect(again).toEqual({ value: first.value, replayed: true });
      expect(sent.take()).toEqual(['acquire']);
      expect(onConnection).toEqual(['acquire']);
      expect(t.runs()).toBe(1);
      expect(await t.rows('k')).toBe(1);
    } finally {
      await counted.end();
    }
  });

  it('an operation that throws rolls its writes back and gives the key back (success only)', async () => {
    const t = setup();
    await expect(
      t.engine.execute(
        { key: 'k', scope: t.scope },
        t.charge('k', async () => {
          throw new Error('card declined');
        }),
      ),
    ).rejects.toThrow('card declined');
    expect(await t.rows('k')).toBe(0);
    expect((await t.store.get(storageKeyOf(t.scope, 'k')))?.status).toBe('released');
    await t.engine.execute({ key: 'k', scope: t.scope }, t.charge('k'));
    expect(await t.rows('k')).toBe(1);
  });

  it('with everythingFinal a thrown error is recorded as the outcome, without business rows', async () => {
    const t = setup({ isFinal: everythingFinal });
    await expect(
      t.engine.execute(
        { key: 'k', scope: t.scope },
        t.charge('k', async () => {
          throw new Error('card declined');
        }),
      ),
    ).rejects.toThrow('card declined');
    expect(await t.rows('k')).toBe(0);
    await expect(
      t.engine.execute({ key: 'k', scope: t.scope }, t.charge('k')),
    ).rejects.toBeInstanceOf(ReplayedFailureError);
    expect(await t.rows('k')).toBe(0);
  });

  it('a key taken over before the transaction could hold it: the operation never runs, one row', async () => {
    const slowPool = makePool({ max: 4 });
    let open = () => {};
    try {
      // The first execution waits for its connection until the retry has taken the key over.
      // Gated on events, not on wall time: under load a fixed delay could outlast nothing.
      // (pool.query connects with a callback: only the engine's promise form is held.)
      const connect = slowPool.connect.bind(slowPool) as (...args: unknown[]) => unknown;
      let delayed = false;
      let reached!: () => void;
      const connecting = new Promise<void>((resolve) => {
        reached = resolve;
      });
      const gate = new Promise<void>((resolve) => {
        open = resolve;
      });
      (slowPool as unknown as { connect: (...args: unknown[]) => unknown }).connect = (
        ...args: unknown[]
      ) => {
        if (args.length > 0 || delayed) return connect(...args);
        delayed = true;
        reached();
        return gate.then(() => connect());
      };
      // Leases of 2 s: core gives an acquisition back, before the operation, when its answer
      // comes within a tenth of the lease's end (it failed CI at load 25 with 300 ms leases:
      // the first's acquisition answered after 270 ms, its operation never asked for the
      // connection, and the test waited for that until its timeout).
      const t = setup({ leaseMs: LEASE_MS });
      // The connection wait is bounded by the statement limit: room for a slow retry meanwhile.
      const slowStore = createPostgresStore({
        pool: slowPool,
        table,
        keyPrefix: t.keyPrefix,
        statementTimeoutMs: 15_000,
      });
      const slow = createPostgresIdempotency<{ id: string }>({
        store: slowStore,
        leaseMs: LEASE_MS,
        heartbeatMs: false,
      });
      const first = slow.execute({ key: 'k', scope: t.scope }, t.charge('k'));
      first.catch(() => {});
      // The first acquired (its operation asks for a connection); its lease then passes (on
      // the server's clock, from before the ask). A first that ends before it asks fails here
      // with its reason, not at the test's timeout.
      await Promise.race([
        connecting,
        first.then(
          () => Promise.reject(new Error('the first ended before it asked for a connection')),
          (error: unknown) => Promise.reject(error),
        ),
      ]);
      await sleep(LEASE_MS + 100);
      const retry = await t.engine.execute({ key: 'k', scope: t.scope }, t.charge('k'));
      open();
      expect(retry.replayed).toBe(false);
      // Its lock found another owner: rolled back before the operation ran.
      await expect(first).rejects.toBeInstanceOf(LeaseLostError);
      expect(t.runs()).toBe(1);
      const { rows } = await raw.query(`SELECT fence FROM ${charges} WHERE scope = $1`, [t.scope]);
      expect(rows.map((r) => Number(r.fence))).toEqual([2]);
      expect(slowPool.totalCount - slowPool.idleCount).toBe(0);
    } finally {
      open();
      await slowPool.end();
    }
  });

  it('a killed transaction connection: nothing recorded, the key released, the retry commits once', async () => {
    const t = setup();
    await expect(
      t.engine.execute(
        { key: 'k', scope: t.scope },
        t.charge('k', async (tx) => {
          const pid = (await tx.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
          await raw.query('SELECT pg_terminate_backend($1)', [pid]);
          await sleep(50);
        }),
      ),
    ).rejects.toBeInstanceOf(TransactionNotCommittedError);
    expect(await t.rows('k')).toBe(0);
    expect((await t.store.get(storageKeyOf(t.scope, 'k')))?.status).toBe('released');
    await t.engine.execute({ key: 'k', scope: t.scope }, t.charge('k'));
    expect(await t.rows('k')).toBe(1);
  });

  it('COMMIT whose answer is lost: the record says it committed, and the call succeeds', async () => {
    const t = setup();
    const result = await t.engine.execute(
      { key: 'k', scope: t.scope },
      t.charge('k', async (tx) => loseAnswerOf(tx, 'COMMIT', 'after')),
    );
    expect(result.replayed).toBe(false);
    expect(await t.rows('k')).toBe(1);
    expect((await t.store.get(storageKeyOf(t.scope, 'k')))?.status).toBe('completed');
    expect(await t.engine.execute({ key: 'k', scope: t.scope }, t.charge('k'))).toEqual({
      value: result.value,
      replayed: true,
    });
  });

  it('COMMIT never sent (the connection died first): not recorded, key released, no row', async () => {
    const t = setup();
    await expect(
      t.engine.execute(
        { key: 'k', scope: t.scope },
        t.charge('k', async (tx) => loseAnswerOf(tx, 'COMMIT', 'before')),
      ),
    ).rejects.toBeInstanceOf(TransactionNotCommittedError);
    expect(await t.rows('k')).toBe(0);
    expect((await t.store.get(storageKeyOf(t.scope, 'k')))?.status).toBe('released');
  });

  it('a serialization failure in the operation is its error: rolled back, key released', async () => {
    const t = setup({ isolationLevel: 'serializable' });
    await raw.query(
      `CREATE TABLE IF NOT EXISTS "${schema}".tx_counter (id int PRIMARY KEY, n int)`,
    );
    await raw.query(
      `INSERT INTO "${schema}".tx_counter VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET n = 0`,
    );
    await expect(
      t.engine.execute({ key: 'k', scope: t.scope }, async ({ tx }) => {
        await tx.query(`SELECT n FROM "${schema}".tx_counter WHERE id = 1`);
        await raw.query(`UPDATE "${schema}".tx_counter SET n = n + 1 WHERE id = 1`);
        await tx.query(`UPDATE "${schema}".tx_counter SET n = n + 10 WHERE id = 1`);
        return { id: 'never' };
      }),
    ).rejects.toMatchObject({ code: '40001' });
    expect((await raw.query(`SELECT n FROM "${schema}".tx_counter WHERE id = 1`)).rows[0].n).toBe(
      1,
    );
    expect((await t.store.get(storageKeyOf(t.scope, 'k')))?.status).toBe('released');
  });

  it('an operation that swallowed an error in its transaction: not committed, key released', async () => {
    const t = setup();
    await expect(
      t.engine.execute(
        { key: 'k', scope: t.scope },
        t.charge('k', async (tx) => {
          await tx.query('SELECT 1 / 0').catch(() => {});
        }),
      ),
    ).rejects.toBeInstanceOf(TransactionNotCommittedError);
    expect(await t.rows('k')).toBe(0);
    expect((await t.store.get(storageKeyOf(t.scope, 'k')))?.status).toBe('released');
  });

  // Core records a success whose policy throws (its effects are done); this engine asks the
  // policy before anything commits, so such a success is rolled back and the key released:
  // nothing committed, nothing recorded, and the caller gets the policy's error.
  it('an outcome policy that throws: the transaction rolls back, nothing commits, the key is free at once', async () => {
    let broken = true;
    const t = setup({
      isFinal: () => {
        if (broken) throw new Error('policy bug');
        return true;
      },
    });
    await expect(t.engine.execute({ key: 'k', scope: t.scope }, t.charge('k'))).rejects.toThrow(
      'policy bug',
    );
    expect(await t.rows('k')).toBe(0);
    expect((await t.store.get(storageKeyOf(t.scope, 'k')))?.status).toBe('released');
    expect(pool.totalCount - pool.idleCount).toBe(0);
    // No lease to wait out: the retry runs, commits once, and is replayed after.
    broken = false;
    const second = await t.engine.execute({ key: 'k', scope: t.scope }, t.charge('k'));
    expect(second.replayed).toBe(false);
    expect(await t.engine.execute({ key: 'k', scope: t.scope }, t.charge('k'))).toEqual({
      value: second.value,
      replayed: true,
    });
    expect(t.runs()).toBe(2);
    expect(await t.rows('k')).toBe(1);
  });

  it('a policy that says "not final" and then throws when core asks: never a recorded success whose rows rolled back', async () => {
    let calls = 0;
    const t = setup({
      isFinal: () => {
        calls++;
        if (calls === 1) return false;
        throw new Error('policy bug on the second call');
      },
    });
    const first = await t.engine.execute({ key: 'k', scope: t.scope }, t.charge('k'));
    expect(first.replayed).toBe(false);
    // The engine asked once and rolled back: core is not asked again.
    expect(calls).toBe(1);
    expect(await t.rows('k')).toBe(0);
    expect((await t.store.get(storageKeyOf(t.scope, 'k')))?.status).toBe('released');
  });

  it('an operation that commits its transaction itself, then a policy that throws: recorded, the policy error, a retry replays', async () => {
    const t = setup({
      isFinal: (settled) => {
        if (settled.ok) throw new Error('policy bug');
        return false;
      },
    });
    await expect(
      t.engine.execute(
        { key: 'k', scope: t.scope },
        t.charge('k', async (tx) => {
          await tx.query('COMMIT');
        }),
      ),
    ).rejects.toThrow('policy bug');
    expect(await t.rows('k')).toBe(1);
    expect((await t.store.get(storageKeyOf(t.scope, 'k')))?.status).toBe('completed');
    const again = await t.engine.execute({ key: 'k', scope: t.scope }, t.charge('k'));
    expect(again.replayed).toBe(true);
    expect(t.runs()).toBe(1);
    expect(await t.rows('k')).toBe(1);
  });

  it('refuses a store on a plain client and a bad isolation level', () => {
    const onClient = createPostgresStore({ pool: { query: async () => ({}) } as never, table });
    expect(() => createPostgresIdempotency({ store: onClient })).toThrow(InvalidInputError);
    const store = createPostgresStore({ pool, table });
    expect(() => createPostgresIdempotency({ store, isolationLevel: 'chaos' as never })).toThrow(
      InvalidInputError,
    );
  });
});

/** core's storage key for (scope, key), as the engine derives it. */
import { deriveStorageKey } from '@idem/core';

function storageKeyOf(scope: string, key: string): string {
  return deriveStorageKey(scope, key);
}

/**
 * Makes the next `sql` statement on `tx` lose its answer: `after` sends it and then fails as a
 * dropped connection would; `before` fails without sending it. Either way the connection is
 * then dropped, as node-postgres does after a connection error.
 */
function loseAnswerOf(tx: pg.PoolClient, sql: string, when: 'before' | 'after'): void {
  const original = tx.query.bind(tx) as (...args: unknown[]) => Promise<unknown>;
  (tx as unknown as { query: (...args: unknown[]) => Promise<unknown> }).query = async (
    ...args: unknown[]
  ) => {
    const config = args[0] as { text?: string } | string;
    const text = typeof config === 'string' ? config : config.text;
    if (text !== sql) return original(...args);
    if (when === 'after') await original(...args);
    throw Object.assign(new Error('Connection terminated unexpectedly'), { code: 'ECONNRESET' });
  };
}
