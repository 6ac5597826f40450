/**
 * Mutation audit (store-postgres): a final write sent on the renewal route (the pool had no
 * connection to hand out) that the server answered with an error is not sent again through
 * the pool's queue (README, Outages: "one that fails there without the server's answer waits
 * in the pool's queue"): the caller gets the server's error at once. Sent again, it waited in
 * the saturated pool's queue for the rest of its limit and the caller got a timeout in place
 * of the server's answer (a large outcome uploaded twice).
 */
import { StoreUnavailableError } from '@idem/core';
import { afterAll, expect, inject, it } from 'vitest';
import { createPostgresStore } from '../src/index.js';
import { acquireInput, HOUR, makePool, randomName } from './pg-env.js';

const pool = makePool({
  max: 1,
  statement_timeout: 5_000,
  query_timeout: 5_000,
  connectionTimeoutMillis: 5_000,
});
const raw = makePool({ max: 1 });
const table = `${inject('pgSchema')}.${randomName('mutpg_route')}`;
afterAll(async () => {
  await raw.query(`DROP TABLE IF EXISTS ${table}, ${table}_held_leases CASCADE`);
  await pool.end();
  await raw.end();
});

it('mutpg: a completion the server refused on the renewal route fails with that answer', async () => {
  const store = createPostgresStore({ pool: raw, table, statementTimeoutMs: 1_500 });
  await store.ensureSchema();
  // Every completion is refused by the server (its answer: P0001).
  await raw.query(`CREATE FUNCTION ${table}_refuse() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN IF NEW.status = 'completed' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$`);
  await raw.query(
    `CREATE TRIGGER refuse BEFORE UPDATE ON ${table} FOR EACH ROW EXECUTE FUNCTION ${table}_refuse()`,
  );
  const input = acquireInput('k');
  const tested = createPostgresStore({ pool, table, statementTimeoutMs: 1_500 });
  expect(await tested.acquire(input)).toMatchObject({ kind: 'acquired' });
  // The pool's one connection busy, a statement waiting: the completion takes the route.
  const busy = await pool.connect();
  const sleeping = busy.query('SELECT pg_sleep(2.5)').finally(() => busy.release());
  const queued = pool.query('SELECT 1');
  expect(pool.waitingCount).toBe(1);
  const error = await tested
    .complete({ key: 'k', owner: input.owner, outcome: new Uint8Array([1]), retentionMs: HOUR })
    .catch((e: unknown) => e);
  expect(error).toBeInstanceOf(StoreUnavailableError);
  expect((error as { cause?: { code?: unknown } }).cause?.code).toBe('P0001');
  await Promise.all([sleeping, queued]);
});
