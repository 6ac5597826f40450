import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { makePool, randomName, sleep } from './pg-env.js';
import { insertCharge } from './take-over.js';

/**
 * rcrev: the one renewal connection's throughput. node-postgres sends one statement at a
 * time on a client, so an engine renews at most 1 / (renewal latency) leases per second,
 * whatever the number of owners; a statement's query_timeout counts its wait in the queue.
 * Server-side slowness of the renewal (sync replication commit, a loaded server, a distant
 * one) is modelled by a trigger that sleeps 200 ms on each write of this test's own
 * held-lease table (own schema: nothing else of the run is slowed).
 */
const schema = randomName('rcrev_slow');
const table = `${schema}.idem_records`;
const charges = `"${schema}".charges`;
const raw = makePool({ max: 4 });

beforeAll(async () => {
  await raw.query(`CREATE SCHEMA "${schema}"`);
  await createPostgresStore({ pool: raw, table }).ensureSchema();
  await raw.query(`CREATE TABLE ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
  await raw.query(`CREATE FUNCTION "${schema}".slow() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END $$`);
  await raw.query(`CREATE TRIGGER slow BEFORE INSERT ON "${schema}"."idem_records_held_leases"
    FOR EACH ROW EXECUTE FUNCTION "${schema}".slow()`);
});
afterAll(async () => {
  await raw.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await raw.end();
});

describe('rcrev: renewal throughput of one connection', () => {
  // FIXED (while the renewal connection is busy, a statement takes a new pool connection when
  // the pool is below its size; a limit counts from the send). FINDING (MEDIUM): with renewals that take 200 ms on the server, a burst of 24 owners (their
  // heartbeats fire together: one shared FixedDelayTimers) needs 4.8 s per round on the one
  // renewal connection; the renewals queued past the 2 s statement limit time out in the
  // queue, RenewalConnection destroys the connection under the rest, and healthy owners'
  // signals abort although the pool (max 30) has 6 free connections that the pre-62f7b28 code
  // would have renewed through in parallel. Suggested fix: several renewal connections (grow
  // with the number of held executions, e.g. one per k owners, or use the pool's free
  // connections when there are any), or batch the due renewals of an engine into one
  // statement (renew_held over arrays), and time a statement from its send, not its enqueue.
  it('24 healthy owners holding at once are never aborted when each renewal takes 200 ms', async () => {
    const pool = makePool({ max: 30 });
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool, table, keyPrefix: randomName('slow') }),
      leaseMs: 6_000,
      heartbeatMs: 2_000,
    });
    const scope = randomName('scope');
    const aborted: number[] = [];
    const errors: unknown[] = [];
    try {
      const owners = Array.from({ length: 24 }, (_, i) =>
        engine
          .execute({ key: `k${i}`, scope }, async ({ tx, fence, signal }) => {
            signal.addEventListener('abort', () => aborted.push(i));
            await insertCharge(tx, charges, scope, fence);
            await sleep(9_000);
            return 'done';
          })
          .catch((e: unknown) => {
            errors.push(e);
          }),
      );
      await Promise.all(owners);
      console.log(
        `[rcrev slow] owners aborted: ${aborted.length}/24; execute errors: ${errors.length}`,
        errors.slice(0, 2).map((e) => (e as Error).message),
      );
      const { rows } = await raw.query(
        `SELECT count(*)::int AS n FROM ${charges} WHERE scope = $1`,
        [scope],
      );
      expect(rows[0].n).toBeLessThanOrEqual(24);
      expect(aborted).toEqual([]);
    } finally {
      await pool.end();
    }
  });
});
