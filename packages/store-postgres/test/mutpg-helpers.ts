/**
 * Shared by the mutation-audit tests (`mutpg-*.test.ts`): a server clock the test sets, so
 * that a deadline can be met to the millisecond.
 *
 * The store's functions read `clock_timestamp()` unqualified, so a session whose
 * `search_path` names a schema of ours before `pg_catalog` runs them on that schema's
 * `clock_timestamp()`: here one that answers a time kept in a one-row table. Each clock has
 * its own schema (dropped by `end()`), and the store under test its own table in the run's
 * schema, so files and tests never meet.
 */
import type pg from 'pg';
import { afterAll, beforeAll, inject } from 'vitest';
import { createPostgresStore, type PostgresStore } from '../src/index.js';
import { makePool, newOwner, randomName } from './pg-env.js';

export interface FrozenClock {
  /** The pool whose sessions read the clock below (the store under test uses it). */
  readonly pool: pg.Pool;
  /** A pool on the real clock, for raw reads and writes. */
  readonly raw: pg.Pool;
  /** A store on `pool`, its own table in the run's schema (created). */
  store(options?: { keyPrefix?: string }): Promise<PostgresStore>;
  /** Sets the server time these sessions see, in epoch ms. */
  set(ms: number): Promise<void>;
  /** Drops the clock's schema and the tables made, and ends both pools. */
  end(): Promise<void>;
}

/** A day in ms (the default grace of `deleteExpired`). */
export const DAY = 86_400_000;

/** A start time of the frozen clock: a whole second, far from any real deadline. */
export const T0 = 1_900_000_000_000;

export async function frozenClock(start = T0): Promise<FrozenClock> {
  const raw = makePool({ max: 2 });
  const schema = randomName('mutpg_clock');
  await raw.query(`CREATE SCHEMA ${schema}`);
  await raw.query(`CREATE TABLE ${schema}.now_ms (v bigint NOT NULL)`);
  await raw.query(`INSERT INTO ${schema}.now_ms VALUES ($1)`, [start]);
  await raw.query(
    `CREATE FUNCTION ${schema}.clock_timestamp() RETURNS timestamptz LANGUAGE sql STABLE AS
       $$ SELECT timestamptz 'epoch' + v * interval '1 millisecond' FROM ${schema}.now_ms $$`,
  );
  // (No JIT: the schema's `hold` turns scans off, and the clock's table read then costs
  // enough for the planner to compile it, which takes seconds.)
  const pool = makePool({
    max: 4,
    options: `-c search_path=${schema},pg_catalog,public -c jit=off`,
  });
  const tables: string[] = [];
  return {
    pool,
    raw,
    async store(options = {}) {
      const table = `${inject('pgSchema')}.${randomName('mutpg')}`;
      tables.push(table);
      const store = createPostgresStore({ pool, table, ...options });
      await store.ensureSchema();
      return store;
    },
    async set(ms) {
      await raw.query(`UPDATE ${schema}.now_ms SET v = $1`, [ms]);
    },
    async end() {
      try {
        for (const table of tables) {
          await raw.query(`DROP TABLE IF EXISTS ${table}, ${table}_held_leases CASCADE`);
        }
        await raw.query(`DROP SCHEMA ${schema} CASCADE`);
      } finally {
        await pool.end();
        await raw.end();
      }
    },
  };
}

/** An acquisition's input on the frozen clock (lease 1 s, retention 10 s unless given). */
export const acquiring = (
  key: string,
  extra: { owner?: string; leaseMs?: number; retentionMs?: number } = {},
) => ({
  key,
  owner: extra.owner ?? newOwner(),
  fingerprint: 'fp',
  leaseMs: extra.leaseMs ?? 1_000,
  retentionMs: extra.retentionMs ?? 10_000,
});

/** A frozen clock for a file's tests, with a store on it (`shared`) made before they run. */
export interface FrozenClockSession extends Omit<FrozenClock, 'end'> {
  readonly shared: PostgresStore;
}

/** Registers the hooks (call at the top of a test file) and gives the file's frozen clock. */
export function frozenClockSession(): FrozenClockSession {
  let clock: FrozenClock | undefined;
  let shared: PostgresStore | undefined;
  beforeAll(async () => {
    clock = await frozenClock();
    shared = await clock.store();
  });
  afterAll(() => clock?.end());
  const ready = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('frozenClockSession: use it inside a test');
    return value;
  };
  return {
    get pool() {
      return ready(clock).pool;
    },
    get raw() {
      return ready(clock).raw;
    },
    get shared() {
      return ready(shared);
    },
    store: (options) => ready(clock).store(options),
    set: (ms) => ready(clock).set(ms),
  };
}

/**
 * A pool with `config` and a table name of the test's own in the run's schema (for triggers
 * that must not reach other tests); after the file, the table is dropped and the pool ended.
 */
export function ownTable(name: string, config: pg.PoolConfig): { pool: pg.Pool; table: string } {
  const pool = makePool(config);
  const table = `${inject('pgSchema')}.${randomName(name)}`;
  afterAll(async () => {
    await pool.query(`DROP TABLE IF EXISTS ${table}, ${table}_held_leases CASCADE`);
    await pool.end();
  });
  return { pool, table };
}
