/**
 * rev32b: an operation that ends its business transaction itself (`COMMIT`, then `BEGIN` on
 * `tx`, or `COMMIT AND CHAIN`, which leaves no idle ReadyForQuery behind: a misuse the engine warns about, but one the public API
 * allows) has its first writes committed. If core's wait for the completion then runs out
 * while the completion statement is unanswered (a server of this file's own, every process
 * SIGSTOPped by PID), the caller must not be told `TransactionNotCommittedError` ("nothing of
 * it is recorded ... a retry runs the operation once"): its rows are in, and the engine then
 * records its outcome in the transaction it left open, so every retry replays it. Before, the
 * stage "completion sent, COMMIT not" alone decided the answer.
 */
import { IdemError } from '@idem/core';
import type pg from 'pg';
import { expect, it } from 'vitest';
import { HEARTBEAT_SQL } from '../src/business-transaction.js';
import {
  createPostgresIdempotency,
  createPostgresStore,
  TransactionNotCommittedError,
} from '../src/index.js';
import { freezeAt, ownPostgresWithBusiness } from './frozen-postgres.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const own = ownPostgresWithBusiness(2_000);

it.each([
  ['COMMIT, then BEGIN', ['COMMIT', 'BEGIN']],
  ['COMMIT AND CHAIN', ['COMMIT AND CHAIN']],
] as const)(
  'an operation that committed its own writes (%s) is never told they did not commit',
  async (name, control) => {
    const { pool } = own;
    const store = createPostgresStore({ pool, statementTimeoutMs: 2_000 });
    const idem = createPostgresIdempotency<string>({
      store,
      leaseMs: 1_500,
      heartbeatMs: 500,
      storeTimeoutMs: 4_000,
      completionWaitMs: 150,
    });
    const key = `ended-by-op ${name}`;
    let runs = 0;
    const op = async ({ tx }: { tx: pg.PoolClient }) => {
      const run = ++runs;
      await tx.query('INSERT INTO business (k, run) VALUES ($1, $2)', [key, run]);
      if (run === 1) {
        for (const statement of control) await tx.query(statement);
        // Frozen as the completion statement goes out on tx.
        freezeAt(own.server, tx, (text) => text !== HEARTBEAT_SQL, 800);
      }
      return `v${run}`;
    };
    const first = await idem.execute({ key, scope: 's' }, op as never).catch((e: unknown) => e);
    let last: unknown;
    for (let i = 0; i < 100; i++) {
      last = await idem.execute({ key, scope: 's' }, op as never).catch((e: unknown) => e);
      if (!(last instanceof Error)) break;
      await sleep(200);
    }
    await idem.drain(10_000);
    const { rows } = await pool.query<{ run: number }>('SELECT run FROM business WHERE k = $1', [
      key,
    ]);
    console.log(
      `[rev32b pg ended] ${name}: first ${first instanceof Error ? `${first.name}: ${first.message}` : JSON.stringify(first)}; runs ${runs}, rows ${JSON.stringify(rows)}`,
    );
    expect(rows).toEqual([{ run: 1 }]);
    expect(runs).toBe(1);
    expect(last).toMatchObject({ value: 'v1' });
    expect(first).toBeInstanceOf(IdemError);
    expect((first as IdemError).code).toBe('STORE_UNAVAILABLE');
    expect(first).not.toBeInstanceOf(TransactionNotCommittedError);
  },
  60_000,
);
