/**
 * stores32: what the transactional engine tells its caller when its server (a PostgreSQL this
 * file owns, every process SIGSTOPped by PID) freezes at the end of the work and core's wait
 * for the completion (`completionWaitMs`) runs out first. Before, the caller got core's
 * "The outcome is not recorded yet ... the executor keeps retrying", whether or not the
 * transaction committed. Now:
 *
 * - frozen as `COMMIT` is sent: `CommitOutcomeUnknownError` (`STORE_UNAVAILABLE`, outcome
 *   `unknown`); when the COMMIT then lands (a short freeze) a retry replays it, never runs
 *   again; when it does not (a freeze longer than every statement limit), a retry runs once;
 * - frozen as the completion statement (before `COMMIT`) is sent: `TransactionNotCommittedError`
 *   and the engine never sends `COMMIT` after that, so it stays true: the first run's row is
 *   never written, a retry runs once.
 *
 * Each case ends with exactly one business row, written by the run whose value every later
 * call gets (the number of runs equals that row's run).
 */
import { IdemError } from '@idem/core';
import type pg from 'pg';
import { expect, it } from 'vitest';
import { HEARTBEAT_SQL } from '../src/business-transaction.js';
import {
  CommitOutcomeUnknownError,
  createPostgresIdempotency,
  createPostgresStore,
  TransactionNotCommittedError,
} from '../src/index.js';
import { freezeAt, ownPostgresWithBusiness } from './frozen-postgres.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const LEASE_MS = 1_500;

const own = ownPostgresWithBusiness(2_000);

const cases = [
  // [name, statement frozen at, frozen ms, statement limit, completionWaitMs, expected error]
  ['COMMIT, answered late (committed)', 'commit', 800, 2_000, 150, CommitOutcomeUnknownError],
  ['COMMIT, past every limit', 'commit', 2 * LEASE_MS, 300, 150, CommitOutcomeUnknownError],
  ['the completion, answered late', 'completion', 800, 2_000, 150, TransactionNotCommittedError],
  [
    'the completion, past every limit',
    'completion',
    2 * LEASE_MS,
    300,
    150,
    TransactionNotCommittedError,
  ],
] as const;

it.each(cases)(
  'frozen at %s: the caller is told what is known, and the key runs exactly once',
  async (name, at, frozenMs, limitMs, completionWaitMs, expected) => {
    const { pool, server } = own;
    const store = createPostgresStore({ pool, statementTimeoutMs: limitMs });
    const idem = createPostgresIdempotency<string>({
      store,
      leaseMs: LEASE_MS,
      heartbeatMs: LEASE_MS / 3,
      storeTimeoutMs: 2 * limitMs,
      completionWaitMs,
    });
    const key = `truth-${name}`;
    let runs = 0;
    const op = async ({ tx }: { tx: pg.PoolClient }) => {
      const run = ++runs;
      await tx.query('INSERT INTO business (k, run) VALUES ($1, $2)', [key, run]);
      if (run === 1)
        freezeAt(
          server,
          tx,
          at === 'commit'
            ? (text) => text === 'COMMIT'
            : (text) => text !== HEARTBEAT_SQL && text !== 'COMMIT',
          frozenMs,
        );
      return `v${run}`;
    };
    const first = await idem.execute({ key, scope: 's' }, op as never).catch((e: unknown) => e);
    let last: unknown;
    const started = performance.now();
    while (performance.now() - started < 20_000) {
      last = await idem.execute({ key, scope: 's' }, op as never).catch((e: unknown) => e);
      if (!(last instanceof Error)) break;
      await sleep(200);
    }
    await idem.drain(10_000);
    const again = await idem.execute({ key, scope: 's' }, op as never);
    const { rows } = await pool.query<{ run: number }>('SELECT run FROM business WHERE k = $1', [
      key,
    ]);
    console.log(
      `[stores32 pg commit] ${name}: first ${first instanceof Error ? `${first.name}: ${first.message}` : JSON.stringify(first)}; runs ${runs}, rows ${JSON.stringify(rows)}`,
    );
    expect(first).toBeInstanceOf(expected);
    expect(first).toBeInstanceOf(IdemError);
    expect((first as IdemError).code).toBe('STORE_UNAVAILABLE');
    expect((first as Error).message).not.toMatch(/not recorded yet/);
    if (expected === CommitOutcomeUnknownError)
      expect((first as CommitOutcomeUnknownError).commitOutcome).toBe('unknown');
    // Exactly once: one row, written by the run every later call answers with.
    expect(rows).toHaveLength(1);
    expect(runs).toBe(rows[0]?.run);
    expect(last).toMatchObject({ value: `v${runs}` });
    expect(again).toEqual({ value: `v${runs}`, replayed: true });
    // Before COMMIT: the first run never commits after its caller was told so.
    if (at === 'completion') expect(runs).toBe(2);
  },
  60_000,
);
