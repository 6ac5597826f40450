import type { IdempotencyStore, StoredRecord } from '@idem/core';
import { describeStoreConformance } from '@idem/store-conformance';
import { afterAll, inject } from 'vitest';
import { createPostgresStore, type PostgresStore } from '../src/index.js';
import { makePool } from './pg-env.js';

/** Runs per property: IDEM_PROPERTY_RUNS if set, else 200 in CI and 25 locally (as Redis). */
const numRuns = Number(process.env.IDEM_PROPERTY_RUNS) || (process.env.CI ? 200 : 25);

// One pool for the stores under test, a second one for raw reads and cleanup.
const pool = makePool();
const raw = makePool({ max: 2, query_timeout: 20_000, statement_timeout: 20_000 });
const table = inject('pgTable');
afterAll(async () => {
  await pool.end();
  await raw.end();
});

const prefixes = new WeakMap<IdempotencyStore, string>();

/** The row as stored, read with a plain SELECT (expired rows count as none, as for `get`). */
async function rawRead(store: IdempotencyStore, storageKey: string) {
  const { rows } = await raw.query(
    `SELECT status, fingerprint, owner, fence, lease_until, expires_at, outcome,
            floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now
       FROM ${table} WHERE key = $1`,
    [(store as PostgresStore).rowKey(storageKey)],
  );
  const row = rows[0];
  if (!row || Number(row.now) >= Number(row.expires_at)) return undefined;
  const record: StoredRecord = {
    status: row.status,
    fingerprint: row.fingerprint,
    owner: row.owner,
    fence: Number(row.fence),
    leaseUntil: Number(row.lease_until),
    expiresAt: Number(row.expires_at),
  };
  if (row.outcome !== null) record.outcome = new Uint8Array(row.outcome);
  return record;
}

describeStoreConformance('postgres', {
  clock: 'server',
  // Every process of an application shares the rows: races run across instances.
  sharedBackend: true,
  leaseMs: 300,
  numRuns,
  createStore: ({ prefix }) => {
    const store = createPostgresStore({ pool, table, keyPrefix: prefix });
    prefixes.set(store, prefix);
    return store;
  },
  destroyStore: async (store) => {
    const prefix = prefixes.get(store);
    // A key range (the index), not starts_with() (a scan of every test's rows).
    if (prefix)
      await raw.query(`DELETE FROM ${table} WHERE key >= $1 AND key < $2`, [
        prefix,
        `${prefix.slice(0, -1)}${String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1)}`,
      ]);
  },
  rawRead,
});
