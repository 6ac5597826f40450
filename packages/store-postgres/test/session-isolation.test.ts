import { InProgressError, StoreUnavailableError } from '@idem/core';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { countStatements } from './counted-pool.js';
import { acquireInput, makePool, newKey, newOwner, randomName, sleep } from './pg-env.js';

/**
 * Sessions whose default isolation is repeatable read or serializable
 * (`default_transaction_isolation`): each store step is then one snapshot, and a row another
 * call changed meanwhile fails the statement with 40001 (or a deadlock with 40P01) instead
 * of being read again. The store sends such a step again, a new transaction, within its time
 * limit: every step gives the answer it gives under read committed, never a store error.
 */
const schema = inject('pgSchema');
// A table of its own: serializable statements here must not meet other files' records in
// the same index pages (predicate locks are per page).
const table = `${schema}.iso_records`;
const ROUNDS = process.env.CI ? 12 : 6;
const raw = makePool({ max: 2 });
const charges = `"${schema}".iso_charges`;
beforeAll(async () => {
  await createPostgresStore({ pool: raw, table }).ensureSchema();
  await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
});
afterAll(() => raw.end());

const strictPool = (level: string): pg.Pool =>
  makePool({ max: 10, options: `-c default_transaction_isolation=${level.replace(' ', '\\ ')}` });

const rejected = (results: PromiseSettledResult<unknown>[]) =>
  results.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : []));
const values = <T>(results: PromiseSettledResult<T>[]) =>
  results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));

for (const level of ['repeatable read', 'serializable']) {
  describe(`sessions defaulting to ${level}`, () => {
    const pool = strictPool(level);
    afterAll(() => pool.end());
    const newStore = () => createPostgresStore({ pool, table, keyPrefix: randomName('iso') });
    /** A record acquired by `owner` whose 1 ms lease has passed by the server's clock. */
    const passedLease = async (store: ReturnType<typeof newStore>, key: string, owner: string) => {
      const first = await store.acquire(acquireInput(key, { owner, leaseMs: 1 }));
      expect(first.kind).toBe('acquired');
      await sleep(5);
    };

    it('is in force, and an uncontended step is still one round trip', async () => {
      const check = await pool.query('SHOW default_transaction_isolation');
      expect(check.rows[0].default_transaction_isolation).toBe(level);
      const sent = countStatements(pool);
      const store = newStore();
      const key = newKey();
      const owner = newOwner();
      await store.acquire(acquireInput(key, { owner }));
      await store.extend({ key, owner, leaseMs: 30_000, retentionMs: 60_000 });
      await store.get(key);
      await store.complete({ key, owner, outcome: new Uint8Array([1]), retentionMs: 60_000 });
      await store.deleteExpired({ limit: 1 });
      expect(sent.take()).toEqual(['acquire', 'extend', 'get', 'complete', 'deleteExpired']);
    });

    it('takeovers racing the owner’s complete and extend: one winner, no store error', async () => {
      const store = newStore();
      for (let round = 0; round < ROUNDS; round++) {
        const key = newKey();
        const owner = newOwner();
        await passedLease(store, key, owner);
        const [complete, extend, ...acquires] = await Promise.allSettled([
          store.complete({ key, owner, outcome: new Uint8Array([round]), retentionMs: 60_000 }),
          store.extend({ key, owner, leaseMs: 30_000, retentionMs: 60_000 }),
          ...Array.from({ length: 6 }, () => store.acquire(acquireInput(key))),
        ]);
        expect(rejected([complete!, extend!, ...acquires])).toEqual([]);
        const won = values(acquires).filter((a) => a.kind === 'acquired').length;
        const completed = (complete as PromiseFulfilledResult<{ ok: boolean }>).value.ok;
        // Either the owner completed (nobody took over) or exactly one acquire took over.
        expect({ won, completed }).toEqual(
          completed ? { won: 0, completed } : { won: 1, completed },
        );
        expect((await store.get(key))?.status).toBe(completed ? 'completed' : 'in_progress');
      }
    });

    it('acquires racing the owner’s release: at most one acquires, no store error', async () => {
      const store = newStore();
      for (let round = 0; round < ROUNDS; round++) {
        const key = newKey();
        const owner = newOwner();
        await passedLease(store, key, owner);
        const [release, ...acquires] = await Promise.allSettled([
          store.release({ key, owner, retentionMs: 60_000 }),
          ...Array.from({ length: 6 }, () => store.acquire(acquireInput(key))),
        ]);
        expect(rejected([release!, ...acquires])).toEqual([]);
        const won = values(acquires).filter((a) => a.kind === 'acquired').length;
        const released = (release as PromiseFulfilledResult<{ ok: boolean }>).value.ok;
        // Released first: one of the acquires takes the tombstone (or, had they all met the
        // row held by the release for over 100 ms, they answered in progress and it stays
        // free). Taken over first: the release finds another owner.
        if (won === 0) expect(released && (await store.get(key))?.status).toBe('released');
        else expect(won).toBe(1);
      }
    });

    it('deleteExpired racing acquires of expired records: each key acquired once', async () => {
      const store = newStore();
      const keys = Array.from({ length: 10 }, () => newKey());
      for (const key of keys)
        await store.acquire(acquireInput(key, { leaseMs: 1, retentionMs: 1 }));
      await sleep(10);
      // 22 calls at once on a pool of 10: on a loaded machine some miss their time limit (a
      // bounded call, as documented). Such a call is repeated with the same input (a repeated
      // acquire by its owner is the same acquisition), so what is counted is each key's one
      // acquisition, whatever the load.
      const settled = async <T>(call: () => Promise<T>): Promise<T> => {
        for (let attempt = 1; ; attempt++) {
          try {
            return await call();
          } catch (error) {
            if (!(error instanceof StoreUnavailableError) || attempt >= 20) throw error;
            await sleep(50);
          }
        }
      };
      const acquireOnce = (key: string) => {
        const input = acquireInput(key);
        return settled(() => store.acquire(input));
      };
      const results = await Promise.allSettled([
        settled(() => store.deleteExpired({ graceMs: 0, limit: 100 })),
        settled(() => store.deleteExpired({ graceMs: 0, limit: 100 })),
        ...keys.flatMap((key) => [acquireOnce(key), acquireOnce(key)]),
      ]);
      expect(rejected(results)).toEqual([]);
      const acquires = values(results.slice(2) as PromiseSettledResult<{ kind: string }>[]);
      expect(acquires.filter((a) => a.kind === 'acquired')).toHaveLength(keys.length);
    });

    it('the transactional engine: concurrent duplicates run once, the others get 409 or the replay', async () => {
      const store = newStore();
      const engine = createPostgresIdempotency<{ id: string }>({ store, heartbeatMs: false });
      const scope = randomName('scope');
      let runs = 0;
      const results = await Promise.allSettled(
        Array.from({ length: 8 }, () =>
          engine.execute({ key: 'k', scope }, async ({ tx, fence }) => {
            runs++;
            const { rows } = await tx.query(
              `INSERT INTO ${charges} (scope, fence) VALUES ($1, $2) RETURNING id`,
              [scope, fence],
            );
            return { id: String(rows[0].id) };
          }),
        ),
      );
      const failures = results.flatMap((r) => (r.status === 'rejected' ? [r.reason] : []));
      expect(failures.filter((e) => !(e instanceof InProgressError)).map(String)).toEqual([]);
      expect(runs).toBe(1);
      const { rows } = await raw.query(
        `SELECT count(*)::int AS n FROM ${charges} WHERE scope = $1`,
        [scope],
      );
      expect(rows[0].n).toBe(1);
    });
  });
}
