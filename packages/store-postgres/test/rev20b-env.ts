/** rev20b's shared steps: a table of its own on the shared server, and a record held by a store. */
import type pg from 'pg';
import { afterAll, beforeAll, expect } from 'vitest';
import { createPostgresStore, type PostgresStore } from '../src/index.js';
import { makePool, newKey, newOwner, randomName } from './pg-env.js';

/** The tables (records and their siblings) named after `table`. */
async function tablesOf(admin: pg.Pool, table: string): Promise<string[]> {
  const { rows } = await admin.query(
    `SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE '${table}%'`,
  );
  return rows.map((row: { tablename: string }) => row.tablename);
}

async function createTable(admin: pg.Pool, table: string, grantTo?: string): Promise<void> {
  await createPostgresStore({ pool: admin, table }).ensureSchema();
  if (grantTo)
    for (const name of await tablesOf(admin, table))
      await admin.query(`GRANT ALL ON ${name} TO ${grantTo}`);
}

async function dropTable(admin: pg.Pool, table: string): Promise<void> {
  for (const name of await tablesOf(admin, table)) await admin.query(`DROP TABLE ${name} CASCADE`);
}

/** A record the store acquired, and the input that renews it (30 s leases). */
export async function held(store: PostgresStore) {
  const lease = { key: newKey(), owner: newOwner(), leaseMs: 30_000, retentionMs: 60_000 };
  expect((await store.acquire({ ...lease, fingerprint: 'f' })).kind).toBe('acquired');
  return lease;
}

/**
 * A table of the file's own for its tests (and a role limited to `roleLimit` connections that
 * may use it, when given), created before them and dropped after; `admin` is the shared
 * server's pool of 1 the file set up with.
 */
export function useTable(prefix: string, roleLimit?: number) {
  const own = {
    table: randomName(prefix),
    role: randomName(`${prefix}_role`),
    admin: undefined as unknown as pg.Pool,
  };
  beforeAll(async () => {
    own.admin = makePool({ max: 1 });
    if (roleLimit === undefined) await createTable(own.admin, own.table);
    else {
      await own.admin.query(`CREATE ROLE ${own.role} LOGIN CONNECTION LIMIT ${roleLimit}`);
      await createTable(own.admin, own.table, own.role);
    }
  }, 30_000);
  afterAll(async () => {
    await dropTable(own.admin, own.table);
    if (roleLimit !== undefined) await own.admin.query(`DROP ROLE IF EXISTS ${own.role}`);
    await own.admin.end();
  });
  return own;
}
