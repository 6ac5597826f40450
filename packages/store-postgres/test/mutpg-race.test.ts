/**
 * Mutation audit (store-postgres): first acquisitions that all read "no record". The acquire
 * function inserts with `ON CONFLICT DO NOTHING`; the racers that lose the insert read the
 * row again (a new snapshot) and answer it as found. It gives up after 10 rounds of a record
 * that keeps changing; a function that gave up after one failed every loser of a first-insert
 * race with STORE_UNAVAILABLE, and no test made the race happen: the racers mostly read the
 * winner's row at once. Here a trigger of the test's own table holds every insert back, so
 * that all racers read no record before one of them inserts.
 */
import { expect, it } from 'vitest';
import { createPostgresStore } from '../src/index.js';
import { ownTable } from './mutpg-helpers.js';
import { acquireInput, newKey } from './pg-env.js';

const { pool, table } = ownTable('mutpg_race', { max: 8 });

it('mutpg: racers that all read no record get one acquisition and found answers, no failure', async () => {
  const store = createPostgresStore({ pool, table });
  await store.ensureSchema();
  await pool.query(`CREATE FUNCTION ${table}_slow() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END $$`);
  await pool.query(
    `CREATE TRIGGER slow BEFORE INSERT ON ${table} FOR EACH ROW EXECUTE FUNCTION ${table}_slow()`,
  );
  for (let round = 0; round < 3; round++) {
    const key = newKey();
    const answers = await Promise.allSettled(
      Array.from({ length: 6 }, () => store.acquire(acquireInput(key))),
    );
    const failed = answers.filter((a) => a.status === 'rejected');
    expect(failed.map((a) => String((a as PromiseRejectedResult).reason))).toEqual([]);
    const kinds = answers.map((a) => (a as PromiseFulfilledResult<{ kind: string }>).value.kind);
    expect(kinds.filter((k) => k === 'acquired')).toHaveLength(1);
    expect(kinds.filter((k) => k === 'found')).toHaveLength(5);
  }
});
