import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { terminationOf } from '../src/business-transaction.js';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { RenewalConnection } from '../src/renewal-connection.js';
import type { IsolationLevel } from '../src/transactional-engine.js';
import { DATABASE_URL, makePool, randomName, sleep } from './pg-env.js';
import { insertCharge } from './take-over.js';

/** The terminations the renewal routes were given (text, repeatable), by a spy on submit. */
const terminations: { text: string; repeatable: boolean }[] = [];
type Submit = (config: pg.QueryConfig, repeatable: boolean) => Promise<unknown>;
const proto = RenewalConnection.prototype as unknown as { submit: Submit };
const submit = proto.submit;
proto.submit = function (this: unknown, config: pg.QueryConfig, repeatable: boolean) {
  if (config.text.includes('pg_terminate_backend'))
    terminations.push({ text: config.text, repeatable });
  return submit.call(this, config, repeatable);
};

/**
 * rcrev4: adversarial review (fourth round) of the xid-guarded max-hold termination
 * (6ce8f86: `terminationOf(pid, xid)`, sent as a repeatable statement once the business
 * transaction's id is known), through the real engine and at the SQL level.
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const charges = `"${schema}".rcrev4_term_charges`;
const otherRole = 'rcrev4_other_role';
const raw = makePool({ max: 4 });

beforeAll(async () => {
  await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
  // A role the business transaction switches to (cluster-wide: created once, never dropped
  // while another run may use it; NOLOGIN, no privileges beyond the charges table).
  await raw.query(`DO $$ BEGIN
      CREATE ROLE ${otherRole} NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$`);
});
afterAll(() => raw.end());

const alive = async (pid: number) =>
  (await raw.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rowCount === 1;

/**
 * One owner whose operation runs `pg_sleep(8)` under a raised `SET LOCAL statement_timeout`
 * (after `SET LOCAL ROLE` when `role`), the engine's `maxHoldMs` 1.5 s: how long after the
 * signal aborted its backend is still alive (undefined: never seen gone within 3 s).
 */
async function maxHold(isolationLevel: IsolationLevel, role: boolean) {
  const pool = makePool({ max: 4, query_timeout: 30_000 });
  const store = createPostgresStore({
    pool,
    table,
    keyPrefix: randomName('r4mh'),
    statementTimeoutMs: 1_000,
  });
  const engine = createPostgresIdempotency<string>({
    store,
    leaseMs: 3_000,
    heartbeatMs: 300,
    maxHoldMs: 1_500,
    isolationLevel,
  });
  const scope = randomName('scope');
  let pid = 0;
  let abortedAt: number | undefined;
  let currentRole = '';
  terminations.length = 0;
  const run = engine
    .execute({ key: 'k', scope }, async ({ tx, fence, signal }) => {
      signal.addEventListener('abort', () => {
        abortedAt = performance.now();
      });
      await insertCharge(tx, charges, scope, fence);
      pid = Number((await tx.query('SELECT pg_backend_pid() AS p')).rows[0].p);
      if (role) await tx.query(`SET LOCAL ROLE ${otherRole}`);
      currentRole = String((await tx.query('SELECT current_user AS u')).rows[0].u);
      await tx.query("SET LOCAL statement_timeout = '30s'");
      await tx.query('SELECT pg_sleep(8)');
      return 'done';
    })
    .catch((e: unknown) => e);
  try {
    for (let i = 0; i < 250 && abortedAt === undefined; i++) await sleep(20);
    expect(abortedAt).toBeDefined();
    let goneAfter: number | undefined;
    for (let i = 0; i < 150; i++) {
      if (pid > 0 && !(await alive(pid))) {
        goneAfter = performance.now() - (abortedAt as number);
        break;
      }
      await sleep(20);
    }
    const outcome = await run;
    return { goneAfter, currentRole, outcome, sent: [...terminations] };
  } finally {
    if (pid > 0) await raw.query('SELECT pg_terminate_backend($1)', [pid]);
    await pool.end();
  }
}

describe('rcrev4: the xid-guarded max-hold termination through the engine', () => {
  // Held: under each isolation level the backend running past the maximum hold is ended
  // within 3 s of the signal's abort (seen: ~20-60 ms on this machine), the execution fails.
  for (const level of ['read committed', 'repeatable read', 'serializable'] as const) {
    it(`ends the backend under ${level}`, async () => {
      const { goneAfter, outcome, sent } = await maxHold(level, false);
      // The xid-guarded statement, as a repeatable one (the transaction's id was known).
      expect(sent).toHaveLength(1);
      expect(sent[0]?.repeatable).toBe(true);
      expect(sent[0]?.text).toContain('backend_xid');
      console.log(
        `[rcrev4 maxhold ${level}] backend gone ${Math.round(goneAfter ?? -1)} ms after abort`,
      );
      expect(goneAfter).toBeDefined();
      expect(outcome).toBeInstanceOf(Error);
    }, 20_000);
  }

  // Held: `SET LOCAL ROLE` in the business transaction changes neither the backend's
  // pg_stat_activity row (its session user) nor backend_xid: the termination still matches.
  it('ends the backend after SET LOCAL ROLE to another role', async () => {
    const { goneAfter, currentRole, sent } = await maxHold('read committed', true);
    expect(sent.map((t) => t.repeatable)).toEqual([true]);
    console.log(`[rcrev4 maxhold role] backend gone ${Math.round(goneAfter ?? -1)} ms after abort`);
    expect(currentRole).toBe(otherRole);
    expect(goneAfter).toBeDefined();
  }, 20_000);
});

describe('rcrev4: terminationOf at the SQL level', () => {
  // Held: the arithmetic. txid_current() is epoch * 2^32 + xid; the statement takes it modulo
  // 2^32 (the literal 4294967296 is an int8, so the modulo is int8 % int8) and compares text
  // with backend_xid::text, the xid's unsigned decimal. Checked for epochs 0..3 and the xid
  // range ends (3 is the first normal xid, 2^32-1 the last) against `xid` text output.
  it('maps a 64-bit transaction id onto backend_xid for any epoch', async () => {
    const { text } = terminationOf(1, '1');
    const modulo = /% (\d+)\)/.exec(text)?.[1];
    expect(modulo).toBe('4294967296');
    for (const epoch of [0, 1, 2, 3]) {
      for (const xid of [3, 4_000_000_000, 4294967295, 2147483648, 2147483647]) {
        const full = (BigInt(epoch) * 2n ** 32n + BigInt(xid)).toString();
        const { rows } = await raw.query(
          `SELECT ($1::bigint % ${modulo})::text AS ours, $2::text::xid::text AS theirs`,
          [full, String(xid)],
        );
        expect(rows[0].ours).toBe(rows[0].theirs);
      }
    }
    // And with the live values: inside a transaction, the modulo of txid_current() is the
    // backend's own backend_xid (a subtransaction's statement included).
    const c = await raw.connect();
    try {
      await c.query('BEGIN');
      await c.query('SAVEPOINT s');
      const { rows } = await c.query(
        `SELECT (txid_current() % ${modulo})::text AS ours,
          (SELECT backend_xid::text FROM pg_stat_activity WHERE pid = pg_backend_pid()) AS theirs`,
      );
      expect(rows[0].ours).toBe(rows[0].theirs);
    } finally {
      await c.query('ROLLBACK');
      c.release();
    }
  });

  // Held: it never ends a backend other than the transaction's. The same pooled connection
  // (same pid) after the transaction ended: idle, then in a new transaction with an xid, then
  // in a new transaction without one; none is terminated (0 rows), the backend stays alive.
  // And a backend in the named transaction is (1 row, gone).
  it('never ends the same pid once the named transaction ended', async () => {
    const victim = new pg.Client({ connectionString: DATABASE_URL });
    victim.on('error', () => {});
    await victim.connect();
    const pid = (victim as unknown as { processID: number }).processID;
    try {
      await victim.query('BEGIN');
      const old = String((await victim.query('SELECT txid_current() AS x')).rows[0].x);
      await victim.query('COMMIT');
      const tries: number[] = [];
      tries.push((await raw.query(terminationOf(pid, old))).rowCount ?? -1);
      await victim.query('BEGIN');
      tries.push((await raw.query(terminationOf(pid, old))).rowCount ?? -1);
      const next = String((await victim.query('SELECT txid_current() AS x')).rows[0].x);
      tries.push((await raw.query(terminationOf(pid, old))).rowCount ?? -1);
      expect(tries).toEqual([0, 0, 0]);
      expect(await alive(pid)).toBe(true);
      expect((await victim.query('SELECT 1 AS one')).rows[0].one).toBe(1);
      // The one it names: terminated.
      const hit = await raw.query(terminationOf(pid, next));
      expect(hit.rowCount).toBe(1);
      for (let i = 0; i < 50 && (await alive(pid)); i++) await sleep(20);
      expect(await alive(pid)).toBe(false);
    } finally {
      await victim.end().catch(() => {});
    }
  });
});
