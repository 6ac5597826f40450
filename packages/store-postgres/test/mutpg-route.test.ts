/**
 * Mutation audit (store-postgres): a final write sent on the renewal route (the pool had no
 * connection to hand out) that the server answered with an error is not sent again through
 * the pool's queue (README, Outages: "one that fails there without the server's answer waits
 * in the pool's queue"): the caller gets the server's error at once. Sent again, it waited in
 * the saturated pool's queue for the rest of its limit and the caller got a timeout in place
 * of the server's answer (a large outcome uploaded twice). The same for a renewal (`extend`).
 */
import { StoreUnavailableError } from '@idem/core';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
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

beforeAll(async () => {
  await createPostgresStore({ pool: raw, table }).ensureSchema();
  // Every write of a record whose fingerprint is 'refused' is refused by the server (P0001).
  await raw.query(`CREATE FUNCTION ${table}_refuse() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN IF NEW.fingerprint = 'refused' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$`);
  await raw.query(
    `CREATE TRIGGER refuse BEFORE UPDATE ON ${table} FOR EACH ROW EXECUTE FUNCTION ${table}_refuse()`,
  );
});

/** The server's refusal of `write`, sent while the pool's one connection is busy and a statement waits. */
async function refusedWhileSaturated(write: () => Promise<unknown>): Promise<unknown> {
  const busy = await pool.connect();
  const sleeping = busy.query('SELECT pg_sleep(2.5)').finally(() => busy.release());
  const queued = pool.query('SELECT 1');
  expect(pool.waitingCount).toBe(1);
  const error = await write().catch((e: unknown) => e);
  await Promise.all([sleeping, queued]);
  return error;
}

const store = createPostgresStore({ pool, table, statementTimeoutMs: 1_500 });

it.each([
  [
    'complete',
    (owner: string) =>
      store.complete({ key: 'complete', owner, outcome: new Uint8Array([1]), retentionMs: HOUR }),
  ],
  [
    'extend',
    (owner: string) => store.extend({ key: 'extend', owner, leaseMs: 30_000, retentionMs: HOUR }),
  ],
] as const)(
  'mutpg: %s refused by the server on the renewal route fails with that answer',
  async (key, write) => {
    const input = { ...acquireInput(key), fingerprint: 'refused' };
    expect(await store.acquire(input)).toMatchObject({ kind: 'acquired' });
    const error = await refusedWhileSaturated(() => write(input.owner));
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as { cause?: { code?: unknown } }).cause?.code).toBe('P0001');
  },
);
