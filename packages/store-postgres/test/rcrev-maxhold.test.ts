import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { makePool, randomName, sleep } from './pg-env.js';
import { insertCharge } from './take-over.js';

/**
 * rcrev: the termination of a transaction's backend at the maximum hold is sent on the same
 * renewal connection as every renewal. Attack: block that connection with another owner's
 * renewal (its held-lease row locked) and check B's long statement is still ended. (Held.)
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const heldLeases = `"${schema}"."idem_records_held_leases"`;
const charges = `"${schema}".rcrev_maxhold_charges`;
const raw = makePool({ max: 4 });

beforeAll(async () => {
  await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
});
afterAll(() => raw.end());

const alive = async (pid: number) =>
  (await raw.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rowCount === 1;

async function scenario(lockOther: boolean): Promise<{ stillAliveAfter: boolean }> {
  // query_timeout raised: B's 8 s statement must not be failed by the client itself.
  const pool = makePool({ max: 6, query_timeout: 30_000 });
  const keyPrefix = randomName('mh');
  const store = createPostgresStore({ pool, table, keyPrefix, statementTimeoutMs: 1_000 });
  // One engine (one renewal connection) for A, an owner whose held-lease row another session
  // locks (its renewals block on the renewal connection until the statement limit, again and
  // again), and B, whose statement runs past the maximum hold.
  const engine = createPostgresIdempotency<string>({
    store,
    leaseMs: 3_000,
    heartbeatMs: 300,
    maxHoldMs: 2_500,
  });
  const scope = randomName('scope');
  const locker = await raw.connect();
  let bPid = 0;
  let bAbortedAt: number | undefined;
  let heldA!: () => void;
  const aHolds = new Promise<void>((r) => {
    heldA = r;
  });
  try {
    const a = engine
      .execute({ key: 'a', scope }, async ({ tx, fence }) => {
        await insertCharge(tx, charges, scope, fence);
        heldA();
        await sleep(7_000);
        return 'a';
      })
      .catch(() => {});
    await aHolds;
    if (lockOther) {
      await locker.query('BEGIN');
      await locker.query('SET LOCAL idle_in_transaction_session_timeout = 0');
      // Pre-empt A's held-lease row (inserted uncommitted: A's first renewal waits for it).
      await locker.query(
        `INSERT INTO ${heldLeases} (key, fence, lease_until) VALUES ($1, 1, 0)
        ON CONFLICT (key) DO UPDATE SET lease_until = EXCLUDED.lease_until`,
        [`${keyPrefix}${'a'}`],
      );
    }
    const started = performance.now();
    const b = engine
      .execute({ key: 'b', scope }, async ({ tx, fence, signal }) => {
        signal.addEventListener('abort', () => {
          bAbortedAt = performance.now();
        });
        await insertCharge(tx, charges, scope, fence);
        bPid = Number((await tx.query('SELECT pg_backend_pid() AS p')).rows[0].p);
        await tx.query("SET LOCAL statement_timeout = '30s'");
        await tx.query('SELECT pg_sleep(8)');
        return 'b';
      })
      .catch((e: unknown) => e);
    // B's signal aborts at the maximum hold; 1.5 s later its backend should be gone.
    for (let i = 0; i < 300 && bAbortedAt === undefined; i++) await sleep(20);
    expect(bAbortedAt).toBeDefined();
    await sleep(1_500);
    const stillAliveAfter = bPid > 0 && (await alive(bPid));
    console.log(
      `[rcrev maxhold lock=${lockOther}] B aborted at ${Math.round(bAbortedAt! - started)} ms; backend alive 1.5 s later: ${stillAliveAfter}`,
    );
    if (lockOther) await locker.query('ROLLBACK');
    if (bPid > 0) await raw.query('SELECT pg_terminate_backend($1)', [bPid]);
    await Promise.all([a, b]);
    return { stillAliveAfter };
  } finally {
    locker.release();
    await pool.end();
  }
}

describe('rcrev: termination at the maximum hold', () => {
  // Held: with nothing blocking the renewal connection, the backend is terminated at the
  // maximum hold.
  it('control: the backend of a statement running past the maximum hold is terminated', async () => {
    expect((await scenario(false)).stillAliveAfter).toBe(false);
  }, 20_000);

  // Held: with A's held-lease row locked by another session (A's renewals blocking the one
  // renewal connection), B's backend is still terminated at its maximum hold (B's abort also
  // drops its connection; seen terminated within 1.5 s of the max hold).
  it('a backend running past the maximum hold is terminated although another renewal blocks the renewal connection', async () => {
    expect((await scenario(true)).stillAliveAfter).toBe(false);
  }, 20_000);
});
