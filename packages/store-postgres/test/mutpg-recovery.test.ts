/**
 * Mutation audit (store-postgres): a statement that ran past the store's limit leaves its
 * connection out of the pool (README, Pool settings: "node-postgres stops waiting and the pool
 * drops the connection"). node-postgres keeps a timed-out statement as the connection's
 * active one: given back to the pool, the connection made the next call wait behind the
 * statement still running on the server, and fail by its own limit too; an outage spread to
 * the calls after it. Here a trigger of the test's own table makes one acquisition slow.
 */
import { StoreUnavailableError } from '@idem/core';
import { expect, it } from 'vitest';
import { createPostgresStore } from '../src/index.js';
import { ownTable } from './mutpg-helpers.js';
import { acquireInput, newKey } from './pg-env.js';

// (The clean-up's DROP waits for the slow statement, still running on its old backend.)
const { pool, table } = ownTable('mutpg_recovery', {
  max: 1,
  statement_timeout: 10_000,
  query_timeout: 10_000,
  lock_timeout: 10_000,
});

it('mutpg: after a statement timed out, the next call gets a connection of its own and succeeds', async () => {
  const setup = createPostgresStore({ pool, table });
  await setup.ensureSchema();
  await pool.query(`CREATE FUNCTION ${table}_slow() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN IF NEW.fingerprint = 'slow' THEN PERFORM pg_sleep(3); END IF; RETURN NEW; END $$`);
  await pool.query(
    `CREATE TRIGGER slow BEFORE INSERT ON ${table} FOR EACH ROW EXECUTE FUNCTION ${table}_slow()`,
  );
  const store = createPostgresStore({ pool, table, statementTimeoutMs: 500 });
  await expect(
    store.acquire({ ...acquireInput(newKey()), fingerprint: 'slow' }),
  ).rejects.toBeInstanceOf(StoreUnavailableError);
  expect(await store.acquire(acquireInput(newKey()))).toMatchObject({ kind: 'acquired' });
});
