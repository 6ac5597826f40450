/**
 * Mutation audit (store-postgres): an acquisition that meets another owner's passed lease
 * whose row a transaction holds waits at most 100 ms for the row, whatever the session's own
 * `lock_timeout`, then answers "in progress" (README, Outages). Without that setting it waited
 * the session's `lock_timeout`: with the recommended 2 s for every limit the outage test's
 * margin hid it, with a longer `lock_timeout` (a pool of the application's settings) the call
 * ran into its time limit and failed instead of answering 409.
 */
import { afterAll, expect, inject, it } from 'vitest';
import { createPostgresStore } from '../src/index.js';
import { acquireInput, makePool, newKey, sleep } from './pg-env.js';

const table = inject('pgTable');
const pool = makePool({ max: 4, lock_timeout: 30_000, statement_timeout: 30_000 });
const holder = makePool({ max: 1 });
afterAll(async () => {
  await pool.end();
  await holder.end();
});

it('mutpg: a held row of a passed lease is answered in progress, not waited for until the time limit', async () => {
  const store = createPostgresStore({ pool, table, statementTimeoutMs: 3_000 });
  const key = newKey();
  const first = acquireInput(key, { leaseMs: 50 });
  expect(await store.acquire(first)).toMatchObject({ kind: 'acquired', fence: 1 });
  const tx = await holder.connect();
  try {
    await tx.query('BEGIN');
    await tx.query(`SELECT 1 FROM ${table} WHERE key = $1 FOR UPDATE`, [store.rowKey(key)]);
    await sleep(100); // the lease passed
    const got = await store.acquire(acquireInput(key));
    expect(got).toMatchObject({
      kind: 'found',
      record: { status: 'in_progress', owner: first.owner, fence: 1 },
    });
  } finally {
    await tx.query('ROLLBACK');
    tx.release();
  }
});
