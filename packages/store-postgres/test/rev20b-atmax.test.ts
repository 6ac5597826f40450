/**
 * rev20b: the plain store's `extend` on its renewal route when the server takes no more
 * connections (a role's CONNECTION LIMIT, SQLSTATE 53300 as at `max_connections`), every pool
 * connection busy for a short statement (well within the store's limit). Through the pool's
 * queue the renewal waited a moment and renewed; the renewal route must not do worse than that.
 */
import { StoreUnavailableError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createPostgresStore } from '../src/index.js';
import { DATABASE_URL, makePool } from './pg-env.js';
import { held, useTable } from './rev20b-env.js';

const own = useTable('rev20b_t', 2);
const TABLE = own.table;

/** A pool of 2 as the role (its whole connection budget), its store, both connections busy. */
async function atLimit(statementTimeoutMs: number, busySeconds: number) {
  const url = new URL(DATABASE_URL);
  url.username = own.role;
  const pool = makePool({ connectionString: url.toString(), max: 2 });
  const store = createPostgresStore({ pool, table: TABLE, statementTimeoutMs });
  const lease = await held(store);
  const sleep = `SELECT pg_sleep(${busySeconds})`;
  const busy = Promise.all([pool.query(sleep), pool.query(sleep)]);
  await new Promise((r) => setTimeout(r, 50));
  const t0 = performance.now();
  const result = await store.extend(lease).then(
    (r) => ({ ok: r.ok }),
    (error: unknown) => ({ error }),
  );
  const took = performance.now() - t0;
  await busy;
  const after = await store.extend(lease).then((r) => r.ok);
  await pool.end();
  return { result, took, after };
}

describe('rev20b: extend at the server connection limit', () => {
  it('renews once a busy pool connection frees up within the limit, as through the pool queue', async () => {
    // Failed at once before: "PostgreSQL extend failed: too many connections for role (53300)".
    const { result, took } = await atLimit(2_000, 0.3);
    expect({ result, slow: took > 2_500 }).toEqual({ result: { ok: true }, slow: false });
  });

  it('connections busy past the limit: fails typed within one statement limit, not two', async () => {
    const { result, took, after } = await atLimit(1_000, 1.8);
    expect((result as { error?: unknown }).error).toBeInstanceOf(StoreUnavailableError);
    expect(took).toBeLessThan(1_400);
    expect(after).toBe(true);
  });
});
