import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { RenewalConnection } from '../src/renewal-connection.js';
import { DATABASE_URL, makePool, randomName } from './pg-env.js';
import { insertCharge } from './take-over.js';

/**
 * rcrev4: adversarial review (fourth round) of the own renewal connection's startup
 * `options` (6ce8f86: `[pool.options.options, READ_COMMITTED].join(' ')`).
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const charges = `"${schema}".rcrev4_opt_charges`;
const raw = makePool({ max: 2 });
const bare = (table.includes('.') ? table.slice(table.lastIndexOf('.') + 1) : table).replaceAll(
  '"',
  '',
);
const serialRole = 'rcrev4_serial_login';

beforeAll(async () => {
  await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
  // A login role whose sessions default to serializable (cluster-wide; created once).
  await raw.query(`DO $$ BEGIN
      CREATE ROLE ${serialRole} LOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$`);
  await raw.query(`ALTER ROLE ${serialRole} SET default_transaction_isolation = 'serializable'`);
});
afterAll(() => raw.end());

/** What `sql` answers on a pool connection and on the own renewal connection of that pool. */
async function onBoth(config: pg.PoolConfig, sql: string) {
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 1, ...config });
  pool.on('error', () => {});
  // The pool's one connection held (as by a business transaction): the statement goes to
  // the own connection.
  const held = await pool.connect();
  const rc = new RenewalConnection(pool, 2_000, 1_000);
  const unused = rc.use();
  try {
    const viaPool = (await held.query(sql)).rows[0];
    const viaOwn = await rc.query({ text: sql, query_timeout: 1_000 } as pg.QueryConfig).then(
      (r) => r.rows[0],
      (e: Error) => `failed: ${e.message}`,
    );
    return { viaPool, viaOwn };
  } finally {
    unused();
    held.release();
    await pool.end();
  }
}

describe('rcrev4: the own connection startup options', () => {
  // Held: a pool whose `options` default its sessions to serializable: its clients run
  // serializable, the own connection read committed (the later -c wins).
  it('read committed over a serializable default in the pool options', async () => {
    const { viaPool, viaOwn } = await onBoth(
      { options: '-c default_transaction_isolation=serializable' },
      'SHOW transaction_isolation',
    );
    expect(viaPool).toEqual({ transaction_isolation: 'serializable' });
    expect(viaOwn).toEqual({ transaction_isolation: 'read committed' });
  });

  // Held: odd but valid quoting in the pool's options (an escaped quote and space) survives.
  it("keeps the pool options' escapes", async () => {
    const { viaPool, viaOwn } = await onBoth(
      { options: "-c application_name=it\\'s\\ x" },
      "SELECT current_setting('application_name') AS a, current_setting('transaction_isolation') AS i",
    );
    expect(viaPool).toEqual({ a: "it's x", i: 'read committed' });
    expect(viaOwn).toEqual({ a: "it's x", i: 'read committed' });
  });

  // FIXED (no `options` of its own any more: read committed is the connection's first
  // statement). FINDING (MEDIUM): the own connection drops PGOPTIONS. node-postgres takes a client's
  // startup `options` from its config, else from the PGOPTIONS environment variable; the own
  // connection always sets `options` (the pool's, or '' , plus read committed), so PGOPTIONS
  // never reaches it while every pool client has it. Repro: PGOPTIONS='-c search_path=<the
  // store's schema>', the store's table named without its schema (as the rcrev3 hooks test
  // does with a connect listener), a pool of one connection held by the business transaction
  // so every renewal goes to the own connection, leaseMs 1 s, the operation 2.3 s: every
  // renewal fails (`<table>_renew_held` does not exist, 42883: search_path is "$user",
  // public there), the owner's signal aborts and the execution fails, although the pool's
  // sessions find everything. Why it matters: PGOPTIONS is the standard libpq/node-postgres
  // way to set session defaults (search_path, role, timeouts) for a deployment; the README
  // promises the own connection is "built from the pool's options" and that session settings
  // such as search_path apply to it. Suggested fix: compute the options node-postgres would
  // use for a pool client (`new ConnectionParameters(pool.options).options`, which reads
  // PGOPTIONS and a connection string's `options=`) and append read committed to that.
  it('PGOPTIONS (search_path) reaches the own renewal connection: the owner is not aborted', async () => {
    const before = process.env.PGOPTIONS;
    process.env.PGOPTIONS = `-c search_path=${schema}`;
    const pool = makePool({ max: 1, query_timeout: 20_000 });
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool, table: bare, keyPrefix: randomName('r4opt') }),
      leaseMs: 1_000,
      heartbeatMs: 200,
    });
    const scope = randomName('scope');
    let signal: AbortSignal | undefined;
    let outcome: unknown;
    try {
      outcome = await engine
        .execute({ key: 'k', scope }, async ({ tx, fence, signal: s }) => {
          signal = s;
          await insertCharge(tx, charges, scope, fence);
          await tx.query("SET LOCAL statement_timeout = '30s'");
          await tx.query('SELECT pg_sleep(2.3)');
          return 'done';
        })
        .then(
          (r) => r.value,
          (e: Error) => `failed: ${e.message.slice(0, 120)}`,
        );
    } finally {
      if (before === undefined) delete process.env.PGOPTIONS;
      else process.env.PGOPTIONS = before;
      await pool.end();
    }
    console.log(`[rcrev4 PGOPTIONS] outcome ${String(outcome)}, aborted ${signal?.aborted}`);
    expect(signal?.aborted).toBe(false);
    expect(outcome).toBe('done');
  }, 20_000);

  // FIXED (as above). FINDING (LOW): pool `options` ending in a backslash make the own connection unopenable.
  // The own connection joins the pool's options and read committed with a space; a trailing
  // `\` escapes that space, so the server gets `...=a\ -c default_transaction_isolation=read\
  // committed` and refuses the connection ("invalid command-line argument for server
  // process"), while the pool's clients (the trailing backslash ignored) connect fine. Repro:
  // `new pg.Pool({ options: '-c application_name=a\\' })`, its only connection held, a
  // statement through the RenewalConnection: it fails; every opening fails the same way, so
  // with the pool busy no renewal is ever sent. Why it matters: small (a malformed-but-
  // accepted option), but the failure is total and only shows under load. Suggested fix:
  // drop a trailing unescaped backslash before joining, or set the isolation by a
  // `SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED` after
  // connecting (inside the opening's limit).
  it('pool options ending in a backslash still open the own connection', async () => {
    const { viaPool, viaOwn } = await onBoth(
      { options: '-c application_name=a\\' },
      "SELECT current_setting('application_name') AS a",
    );
    expect(viaPool).toEqual({ a: 'a' });
    expect(viaOwn).toEqual({ a: 'a' });
  });

  // FIXED (as above). FINDING (LOW): a connection string with `options=` drops read committed entirely, not only
  // an isolation set there. node-postgres lets a connection string's fields override the
  // config, so `options` is replaced whole. Repro: a login role whose sessions default to
  // serializable (`ALTER ROLE r SET default_transaction_isolation = 'serializable'`), the pool's
  // connection string `...?options=-c application_name=x` (nothing about isolation): the own
  // connection runs serializable. The README says only that an isolation given as `options=`
  // in a connection string wins. Why it matters: the own connection's read committed exists so
  // that a renewal never fails on a serialization conflict (a role- or database-level
  // serializable default is a common way to get it). Suggested fix: as above, start from the
  // effective options (`ConnectionParameters`) and pass the merged string with the connection
  // string's `options` removed, or SET the isolation after connecting.
  it("a connection string's options= keeps read committed on the own connection", async () => {
    const url = new URL(DATABASE_URL);
    url.username = serialRole;
    url.searchParams.set('options', '-c application_name=x');
    const { viaPool, viaOwn } = await onBoth(
      { connectionString: url.toString() },
      "SELECT current_setting('application_name') AS a, current_setting('transaction_isolation') AS i",
    );
    expect(viaPool).toEqual({ a: 'x', i: 'serializable' });
    expect(viaOwn).toEqual({ a: 'x', i: 'read committed' });
  });
});
