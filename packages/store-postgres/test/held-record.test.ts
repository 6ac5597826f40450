import { deriveStorageKey, InProgressError, LeaseLostError } from '@idem/core';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  createPostgresIdempotency,
  createPostgresStore,
  type IsolationLevel,
  TransactionNotCommittedError,
} from '../src/index.js';
import { makePool, randomName, sleep } from './pg-env.js';

/**
 * The transactional engine holds its record's row from BEGIN to the transaction's end: what
 * heartbeats, duplicates, a killed connection and the maximum hold do meanwhile.
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const charges = `"${schema}".held_charges`;
const pool = makePool({ max: 8 });
// Duplicates go through a pool that never gives up waiting for a lock: if an acquire waited
// for the held row, it would wait until the test lets the transaction end.
const patient = makePool({ max: 4, lock_timeout: 0, statement_timeout: 0, query_timeout: 60_000 });
const raw = makePool({ max: 2 });
const LEVELS: IsolationLevel[] = ['read committed', 'repeatable read', 'serializable'];

beforeAll(async () => {
  await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
});
afterAll(async () => {
  await Promise.all([pool.end(), patient.end(), raw.end()]);
});

/** A gate the test opens: the operation waits at it while its transaction holds the row. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

function setup(isolationLevel: IsolationLevel, extra: { maxHoldMs?: number } = {}) {
  const keyPrefix = randomName('held');
  const store = createPostgresStore({ pool, table, keyPrefix });
  // Heartbeats every 100 ms with a lease of 1 s: a timer late by most of a second (a loaded
  // machine) still renews in time.
  const options = { leaseMs: 1_000, heartbeatMs: 100, isolationLevel, ...extra };
  const engine = createPostgresIdempotency<{ id: string }>({ store, ...options });
  const duplicates = createPostgresIdempotency<{ id: string }>({
    store: createPostgresStore({ pool: patient, table, keyPrefix, statementTimeoutMs: 60_000 }),
    ...options,
    storeTimeoutMs: 60_000,
  });
  const scope = randomName('scope');
  const rowKey = store.rowKey(deriveStorageKey(scope, 'k'));
  const record = async () =>
    (
      await raw.query(
        `SELECT status, fence, owner, lease_until, floor(extract(epoch FROM clock_timestamp()) * 1000) AS now FROM ${table} WHERE key = $1`,
        [rowKey],
      )
    ).rows[0] as { status: string; fence: string; lease_until: string; now: string };
  /** Waits (bounded) until the stored lease of the record has passed by the server's clock. */
  const leasePassed = async () => {
    for (let i = 0; i < 400; i++) {
      const r = await record();
      if (Number(r.now) > Number(r.lease_until)) return r;
      await sleep(25);
    }
    throw new Error('the stored lease never passed');
  };
  const rows = async () =>
    (await raw.query(`SELECT fence FROM ${charges} WHERE scope = $1`, [scope])).rows.map((r) =>
      Number(r.fence),
    );
  /** The operation: one business row, then it waits at `wait` (with its tx, pid and signal). */
  const charge =
    (wait: Promise<void>, seen: { pid?: number; signal?: AbortSignal; held?: () => void }) =>
    async ({ tx, fence, signal }: { tx: pg.PoolClient; fence: number; signal: AbortSignal }) => {
      const { rows: inserted } = await tx.query(
        `INSERT INTO ${charges} (scope, fence) VALUES ($1, $2) RETURNING id, pg_backend_pid() AS pid`,
        [scope, fence],
      );
      seen.pid = inserted[0].pid;
      seen.signal = signal;
      seen.held?.();
      await wait;
      return { id: String(inserted[0].id) };
    };
  return { engine, duplicates, scope, record, leasePassed, rows, charge };
}

describe('a transaction that outlives its lease', () => {
  for (const level of LEVELS) {
    it(`${level}: heartbeats renew nothing other sessions see; a duplicate gets 409 at once; after COMMIT it replays`, async () => {
      // On a loaded machine the owner may really lose its lease (its heartbeats not answered
      // within the lease): then the duplicate rightly takes over, and what this test is about
      // (a held row answers 409) cannot be seen. That case is checked for exactly-once (the
      // owner's transaction rolled back, one row, the duplicate's) and the scenario runs
      // again, at most three times; a duplicate that ran beside an owner that had not lost its
      // lease fails at once.
      for (let attempt = 1; ; attempt++) {
        const outcome = await heldAnswers409(level);
        if (outcome === 'held') return;
        expect(attempt, 'the owner lost its lease under load three times').toBeLessThan(3);
      }
    });
  }

  /** One run of the scenario: 'held' when every point held, 'lost' when the owner lost its lease. */
  async function heldAnswers409(level: IsolationLevel): Promise<'held' | 'lost'> {
    const t = setup(level);
    const { open, opened } = gate();
    const held = gate();
    const seen: { signal?: AbortSignal; held?: () => void } = { held: held.open };
    const first = t.engine.execute({ key: 'k', scope: t.scope }, t.charge(opened, seen));
    first.catch(() => {});
    const started = await Promise.race([held.opened.then(() => true), first.then(() => false)]);
    expect(started).toBe(true);
    const atLock = await t.record();
    // Longer than the lease: without heartbeats answered, the signal would have aborted.
    await sleep(1_300);
    if (seen.signal?.aborted) return lostUnderLoad(t, first, open);
    const passed = await t.leasePassed();
    // Other sessions see no renewal while the transaction holds the row (the heartbeats extend
    // inside it: that commits only with it).
    expect(passed.lease_until).toBe(atLock.lease_until);
    // The duplicate's acquire meets the held row: 409 now, not after the lock is freed.
    const duplicate = t.duplicates.execute({ key: 'k', scope: t.scope }, async () => ({
      id: 'duplicate ran',
    }));
    const answer = await Promise.race([
      duplicate.then(
        () => 'executed',
        (error: unknown) => error,
      ),
      sleep(20_000).then(() => 'still waiting'),
    ]);
    if (answer === 'executed') {
      // The duplicate took over, so the owner's lease had ended as the store sees it (a
      // heartbeat that failed in its transaction, or went unanswered under load). The owner
      // must learn it: its signal aborts within a bound (it can trail the takeover by the
      // event loop's lag, as a CI lane showed, so it is not required at this very instant).
      // A duplicate beside an owner that keeps renewing never sees that abort and fails here.
      for (let i = 0; i < 250 && !seen.signal?.aborted; i++) await sleep(20);
      expect(seen.signal?.aborted, 'a duplicate ran while the owner still held its lease').toBe(
        true,
      );
      return lostUnderLoad(t, first, open);
    }
    expect(answer).toBeInstanceOf(InProgressError);
    // A retry hint as for a live lease, not "the lease passed".
    expect((answer as InProgressError).retryAfterMs).toBeGreaterThan(100);
    open();
    const result = await first;
    expect(result.replayed).toBe(false);
    expect(await t.rows()).toEqual([1]);
    expect(
      await t.duplicates.execute({ key: 'k', scope: t.scope }, async () => ({ id: 'x' })),
    ).toEqual({ value: result.value, replayed: true });
    return 'held';
  }

  /** The owner lost its lease: it must end without committing its row. */
  async function lostUnderLoad(
    t: ReturnType<typeof setup>,
    first: Promise<unknown>,
    open: () => void,
  ): Promise<'lost'> {
    open();
    await expect(first).rejects.toBeInstanceOf(Error);
    expect(await t.rows()).toEqual([]);
    return 'lost';
  }

  it('the connection killed mid-operation: the owner is told at once; a duplicate takes over once its held lease passed; one row', async () => {
    const t = setup('repeatable read');
    const { open, opened } = gate();
    const held = gate();
    const seen: { pid?: number; signal?: AbortSignal; held?: () => void } = { held: held.open };
    const first = t.engine.execute({ key: 'k', scope: t.scope }, t.charge(opened, seen));
    first.catch(() => {});
    await held.opened;
    await t.leasePassed();
    const killedAt = performance.now();
    await raw.query('SELECT pg_terminate_backend($1)', [seen.pid]);
    // The operation's signal aborts as soon as its connection reports the break.
    for (let i = 0; i < 200 && !seen.signal?.aborted; i++) await sleep(5);
    expect(seen.signal?.aborted).toBe(true);
    // The record's own lease passed (its row was held, nothing renewed it), but the lease
    // the heartbeats renewed through the pool holds a duplicate off until it passes too: at
    // most one lease after the kill (the owner renews no more: its row is gone).
    let retry: { replayed: boolean } | undefined;
    while (retry === undefined && performance.now() - killedAt < 5_000) {
      try {
        retry = await t.duplicates.execute({ key: 'k', scope: t.scope }, async ({ tx, fence }) => {
          const { rows } = await tx.query(
            `INSERT INTO ${charges} (scope, fence) VALUES ($1, $2) RETURNING id`,
            [t.scope, fence],
          );
          return { id: String(rows[0].id) };
        });
      } catch (error) {
        expect(error).toBeInstanceOf(InProgressError);
        await sleep(25);
      }
    }
    expect(retry?.replayed).toBe(false);
    expect(performance.now() - killedAt).toBeLessThan(1_000 + 1_500);
    open();
    const error = await first.then(
      () => 'committed',
      (e: unknown) => e,
    );
    expect(
      error instanceof LeaseLostError || error instanceof TransactionNotCommittedError,
      String(error),
    ).toBe(true);
    expect(await t.rows()).toEqual([2]);
    expect((await t.record()).status).toBe('completed');
  });

  it('the maximum hold ends the transaction: nothing commits, the key goes back', async () => {
    const t = setup('read committed', { maxHoldMs: 400 });
    const { open, opened } = gate();
    const held = gate();
    const seen: { signal?: AbortSignal; held?: () => void } = { held: held.open };
    const first = t.engine.execute({ key: 'k', scope: t.scope }, t.charge(opened, seen));
    first.catch(() => {});
    await held.opened;
    // Past max hold + a lease the watchdog fires and the engine drops the connection.
    for (let i = 0; i < 400 && !seen.signal?.aborted; i++) await sleep(25);
    expect(seen.signal?.aborted).toBe(true);
    open();
    await expect(first).rejects.toBeInstanceOf(TransactionNotCommittedError);
    expect(await t.rows()).toEqual([]);
    expect((await t.record()).status).toBe('released');
    const retry = await t.engine.execute(
      { key: 'k', scope: t.scope },
      t.charge(Promise.resolve(), {}),
    );
    expect(retry.replayed).toBe(false);
    expect(await t.rows()).toEqual([2]);
  });
});
