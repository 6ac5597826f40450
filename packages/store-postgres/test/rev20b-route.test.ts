/**
 * rev20b: the plain store's renewal route (`extend` off the pool's queue), its bounds.
 * (1) Several stores on one pool (a table each, or a key prefix each): the README promises one
 *     connection more than the pool's `max` at most, not one per store.
 * (2) Pools of other shapes still renew, free or busy: an APM-like subclass wrapping `query`
 *     and `connect`, a pool with no timeouts at all, a `pg.Client`.
 * (3) After pool.end() the store opens nothing more: extend fails as every other call (it
 *     opened a connection outside the ended pool and renewed).
 */
import { StoreUnavailableError } from '@idem/core';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { createPostgresStore } from '../src/index.js';
import { DATABASE_URL, makePool, newOwner, randomName } from './pg-env.js';
import { held, useTable } from './rev20b-env.js';

const own = useTable('rev20b_r');
const TABLE = own.table;
const APP = randomName('rev20b_app');

const backends = async (): Promise<number> =>
  Number(
    (
      await own.admin.query(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
        [APP],
      )
    ).rows[0].n,
  );

describe('rev20b: the renewal route of several stores on one pool', () => {
  it('three stores sharing a pool of 1, its connection busy: one own connection, not three', async () => {
    const pool = makePool({ max: 1, application_name: APP });
    const stores = ['a', 'b', 'c'].map((p) =>
      createPostgresStore({ pool, table: TABLE, keyPrefix: `${APP}${p}` }),
    );
    try {
      const leases = await Promise.all(
        stores.map(async (store) => ({ store, lease: await held(store) })),
      );
      const busy = await pool.connect(); // the pool's only connection, in the app's hands
      try {
        const answers = await Promise.all(
          leases.map(({ store, lease }) => store.extend(lease).then((r) => r.ok)),
        );
        expect(answers).toEqual([true, true, true]);
        expect(await backends()).toBeLessThanOrEqual(2);
      } finally {
        busy.release();
      }
    } finally {
      await pool.end();
    }
  });

  class Traced extends pg.Pool {
    calls = 0;
    // biome-ignore lint/suspicious/noExplicitAny: pg's overloads
    override query(...args: any[]): any {
      this.calls++;
      // biome-ignore lint/suspicious/noExplicitAny: pg's overloads
      return (super.query as any)(...args);
    }
    // biome-ignore lint/suspicious/noExplicitAny: pg's overloads
    override connect(...args: any[]): any {
      // biome-ignore lint/suspicious/noExplicitAny: pg's overloads
      return (super.connect as any)(...args);
    }
  }

  it.each([
    ['an APM-like subclass', () => new Traced({ connectionString: DATABASE_URL, max: 1 })],
    ['a pool with no timeouts', () => new pg.Pool({ connectionString: DATABASE_URL, max: 1 })],
  ] as const)('%s: renews with its connection free and busy', async (_, make) => {
    const pool = make();
    pool.on('error', () => {});
    const store = createPostgresStore({ pool, table: TABLE, keyPrefix: `${APP}s` });
    try {
      const lease = await held(store);
      expect((await store.extend(lease)).ok).toBe(true);
      const busy = await pool.connect();
      try {
        const renewed = await store.extend(lease);
        expect(renewed.ok).toBe(true);
        if (renewed.ok) expect(renewed.leaseUntil).toBeGreaterThan(Date.now() + 25_000);
      } finally {
        busy.release();
      }
      expect((await store.extend({ ...lease, owner: newOwner() })).ok).toBe(false);
    } finally {
      await pool.end();
    }
  });

  it('a pg.Client: renews through it', async () => {
    const client = new pg.Client({ connectionString: DATABASE_URL });
    await client.connect();
    const store = createPostgresStore({ pool: client, table: TABLE, keyPrefix: `${APP}c` });
    try {
      const lease = await held(store);
      expect((await store.extend(lease)).ok).toBe(true);
    } finally {
      await client.end();
    }
  });

  it('after pool.end(): extend fails typed as the other calls, and opens no connection', async () => {
    const pool = makePool({ max: 1, application_name: `${APP}e` });
    const store = createPostgresStore({ pool, table: TABLE, keyPrefix: `${APP}e` });
    const lease = await held(store);
    await pool.end();
    const error = await store.extend(lease).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(StoreUnavailableError);
  });
});
