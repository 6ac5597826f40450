import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { recommendedPoolConfig } from '../src/index.js';

/** The server the tests use: `DATABASE_URL`, else the local one the bootstrap starts. */
export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** What to do when no server answers. */
export const HOW_TO_PROVIDE =
  'Start the local one with `bash scripts/bootstrap.sh --services` (PostgreSQL on 127.0.0.1:5432, ' +
  'database `test`, trust auth), or point the tests at another server with ' +
  'DATABASE_URL=postgres://user:password@host:port/database.';

/** A pool with the recommended settings (plus `extra`), tagged so fault tests can find its backends. */
export function makePool(extra: pg.PoolConfig = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: DATABASE_URL,
    ...recommendedPoolConfig(),
    application_name: 'idem-store-postgres-test',
    max: 8,
    ...extra,
  });
  // A terminated backend surfaces here for idle clients; the pool replaces them.
  pool.on('error', () => {});
  return pool;
}

export const randomName = (prefix: string) => `${prefix}_${randomBytes(5).toString('hex')}`;
export const newKey = () => randomBytes(32).toString('hex');
export const newOwner = () => randomBytes(16).toString('base64url');
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
export const HOUR = 3_600_000;

/** Storage key, owner and durations of one acquisition, defaults filled in. */
export const acquireInput = (
  key: string,
  extra: { owner?: string; fingerprint?: string; leaseMs?: number; retentionMs?: number } = {},
) => ({
  key,
  owner: extra.owner ?? newOwner(),
  fingerprint: extra.fingerprint ?? 'fp',
  leaseMs: extra.leaseMs ?? 30_000,
  retentionMs: extra.retentionMs ?? HOUR,
});

/**
 * Runs a catalog change (CREATE ROLE, GRANT, DROP ...), trying again when another session's
 * catalog change at the same moment fails it with "tuple concurrently updated" (files run
 * four at a time, and several grant on the same schema): 5 attempts at most, 100 ms apart.
 */
export async function catalogChange(client: pg.Pool | pg.Client, sql: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await client.query(sql);
      return;
    } catch (error) {
      if (attempt >= 5 || !String(error).includes('tuple concurrently updated')) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/** Drops a role a test made (what it owns, then the role); see {@link catalogChange}. */
export async function dropRole(client: pg.Pool | pg.Client, role: string): Promise<void> {
  await catalogChange(client, `DROP OWNED BY ${role}`);
  await catalogChange(client, `DROP ROLE ${role}`);
}

/** Polls `check` every 25 ms until `done` holds of its answer or `ms` passed; its last answer. */
export async function pollUntil<T>(
  check: () => Promise<T>,
  done: (value: T) => boolean,
  ms: number,
): Promise<T> {
  const end = performance.now() + ms;
  let value = await check();
  while (!done(value) && performance.now() < end) {
    await sleep(25);
    value = await check();
  }
  return value;
}

/** Backends running an upload guard's loop now (other than `pool`'s own), their text containing `containing`. */
export async function uploadGuardsRunning(pool: pg.Pool, containing = ''): Promise<number> {
  const { rows } = await pool.query(
    "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE 'DO $idem_upload_guard$%' AND strpos(query, $1) > 0 AND pid <> pg_backend_pid()",
    [containing],
  );
  return Number(rows[0].n);
}
