import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { LINGER_MS, RenewalConnection } from '../src/renewal-connection.js';
import { DATABASE_URL, makePool, randomName, sleep } from './pg-env.js';
import { insertCharge } from './take-over.js';
import { startProxy } from './tcp-proxy.js';

/**
 * The transactional engine's own connection for held-lease renewals and backend
 * terminations (src/renewal-connection.ts): outside the pool, built from the pool's options
 * and set up by its `connect` listeners, replaced when it fails or falls silent, closed after
 * it was last used, never keeping the process alive. (The pool held entirely by long
 * transactions and the slow new connection are in pgrev17 and pgrev19.)
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const charges = `"${schema}".renewal_charges`;
const raw = makePool({ max: 2 });
const url = new URL(DATABASE_URL);

afterAll(() => raw.end());

const pidOf = async (connection: RenewalConnection) =>
  Number((await connection.query({ text: 'SELECT pg_backend_pid() AS pid' })).rows[0]!.pid);

const backendsNamed = async (name: string) =>
  Number(
    (
      await raw.query(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
        [name],
      )
    ).rows[0].n,
  );

describe('the renewal connection', () => {
  it("is not one of the pool's, and the pool's connect listeners set it up: a search_path set there finds the store's functions", async () => {
    // The store's table named without its schema: only the listener's search_path finds it.
    const pool = makePool({ max: 1, query_timeout: 20_000 });
    const seen: unknown[] = [];
    pool.on('connect', (client) => {
      seen.push(client);
      void client.query(`SET search_path TO "${schema}"`);
    });
    await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
      id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
    const bare = table.includes('.') ? table.slice(table.lastIndexOf('.') + 1) : table;
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({
        pool,
        table: bare.replaceAll('"', ''),
        keyPrefix: randomName('rc'),
      }),
      leaseMs: 1_000,
      heartbeatMs: 200,
    });
    const scope = randomName('scope');
    let signal: AbortSignal | undefined;
    try {
      // Longer than two leases, on the pool's only connection: the lease is renewed on the
      // renewal connection or the signal aborts.
      const result = await engine.execute({ key: 'k', scope }, async ({ tx, fence, signal: s }) => {
        signal = s;
        await insertCharge(tx, charges, scope, fence);
        await tx.query("SET LOCAL statement_timeout = '30s'");
        await tx.query('SELECT pg_sleep(2.3)');
        return 'done';
      });
      expect(result).toEqual({ value: 'done', replayed: false });
      expect(signal?.aborted).toBe(false);
      expect(pool.totalCount).toBe(1);
      // The pool's one client and the renewal connection.
      expect(seen.length).toBe(2);
    } finally {
      await pool.end();
    }
  });

  it('a connection that falls silent is dropped at the statement time limit; the next statement opens another', async () => {
    const proxy = await startProxy({ host: url.hostname, port: Number(url.port || 5432) });
    const via = new URL(DATABASE_URL);
    via.hostname = '127.0.0.1';
    via.port = String(proxy.port);
    const pool = makePool({ connectionString: via.toString(), max: 1 });
    const connection = new RenewalConnection(pool, 2_000, 2_000, 200);
    try {
      const first = await pidOf(connection);
      proxy.mode = 'silent';
      const started = performance.now();
      await expect(
        connection.query({ text: 'SELECT 1', query_timeout: 300 } as never),
      ).rejects.toThrow(/timeout/i);
      expect(performance.now() - started).toBeLessThan(1_500);
      proxy.mode = 'pass';
      const second = await pidOf(connection);
      expect(second).not.toBe(first);
    } finally {
      await proxy.close();
      await pool.end();
    }
  });

  it('a terminated backend is replaced; an error the server reports keeps the connection', async () => {
    const pool = makePool({ max: 1 });
    const connection = new RenewalConnection(pool, 2_000, 2_000, 200);
    try {
      const first = await pidOf(connection);
      await expect(connection.query({ text: 'SELECT 1/0' })).rejects.toThrow(/division by zero/);
      expect(await pidOf(connection)).toBe(first);
      await raw.query('SELECT pg_terminate_backend($1)', [first]);
      // The error reaches the client a moment later; until then a statement fails at once.
      let second: number | undefined;
      for (let i = 0; i < 50 && second === undefined; i++) {
        second = await pidOf(connection).catch(() => undefined);
        if (second === first) second = undefined;
        if (second === undefined) await sleep(20);
      }
      expect(second).toBeGreaterThan(0);
      expect(second).not.toBe(first);
    } finally {
      await pool.end();
    }
  });

  it("a statement that waits for a lock is ended by the server at the store's limit, and the statements queued behind it go on", async () => {
    const pool = makePool({ max: 1 });
    const connection = new RenewalConnection(pool, 2_000, 300, 200);
    // The pool's one connection held (as by a business transaction): every statement goes to
    // the renewal connection.
    const held = await pool.connect();
    const locker = await raw.connect();
    const lockTable = `"${schema}".renewal_locks`;
    try {
      await raw.query(`CREATE TABLE IF NOT EXISTS ${lockTable} (id int PRIMARY KEY)`);
      await raw.query(`INSERT INTO ${lockTable} VALUES (1) ON CONFLICT DO NOTHING`);
      const pid = await pidOf(connection);
      await locker.query('BEGIN');
      await locker.query(`SELECT * FROM ${lockTable} WHERE id = 1 FOR UPDATE`);
      const started = performance.now();
      const blocked = connection.query({
        text: `SELECT * FROM ${lockTable} WHERE id = 1 FOR UPDATE`,
      });
      const behind = pidOf(connection);
      // lock_timeout (55P03) or statement_timeout (57014): both are the store's limit.
      await expect(blocked).rejects.toMatchObject({
        code: expect.stringMatching(/^(55P03|57014)$/),
      });
      expect(await behind).toBe(pid);
      expect(performance.now() - started).toBeLessThan(1_500);
    } finally {
      await locker.query('ROLLBACK').catch(() => {});
      locker.release();
      held.release();
      await pool.end();
    }
  });

  it("a set-up that outlasts the opening's limit is given up: the statement fails, no listener hears of that client, the next opening works", async () => {
    let hangMs = 0;
    const pool = makePool({
      max: 1,
      onConnect: () => sleep(hangMs),
    } as pg.PoolConfig);
    let connects = 0;
    let removes = 0;
    const held = await pool.connect();
    pool.on('connect', () => connects++);
    pool.on('remove', () => removes++);
    const connection = new RenewalConnection(pool, 300, 2_000, 200);
    try {
      hangMs = 1_000;
      const started = performance.now();
      await expect(
        connection.query({ text: 'SELECT 1', query_timeout: 2_000 } as never),
      ).rejects.toThrow(/not set up within 300 ms/);
      expect(performance.now() - started).toBeLessThan(1_000);
      // The hook returns later: the client it was given is not announced then.
      await sleep(1_200);
      expect({ connects, removes }).toEqual({ connects: 0, removes: 0 });
      hangMs = 0;
      expect((await connection.query({ text: 'SELECT 2 AS n' })).rows[0]?.n).toBe(2);
      expect(connects).toBe(1);
    } finally {
      held.release();
      await pool.end();
    }
  });

  it('is closed once no execution used it for its linger time, and opened again by the next', async () => {
    const name = randomName('idem-rc');
    const pool = makePool({ max: 1, application_name: name });
    const connection = new RenewalConnection(pool, 2_000, 2_000, 300);
    try {
      const done = connection.use();
      await connection.query({ text: 'SELECT 1' });
      expect(await backendsNamed(name)).toBe(1);
      await sleep(500);
      // Still in use: kept.
      expect(await backendsNamed(name)).toBe(1);
      done();
      done(); // a second call changes nothing
      await sleep(700);
      expect(await backendsNamed(name)).toBe(0);
      const again = connection.use();
      await connection.query({ text: 'SELECT 1' });
      expect(await backendsNamed(name)).toBe(1);
      again();
      await sleep(700);
      expect(await backendsNamed(name)).toBe(0);
      // Used by an execution that ended before the connection was open (nothing sent on it).
      connection.use()();
      for (let i = 0; i < 100 && (await backendsNamed(name)) === 0; i++) await sleep(20);
      expect(await backendsNamed(name)).toBe(1);
      await sleep(700);
      expect(await backendsNamed(name)).toBe(0);
    } finally {
      await pool.end();
    }
  });

  it('never keeps the process alive: a script that ran one execution and ended its pool exits at once', async () => {
    const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));
    const script = `
      import pg from 'pg';
      const { createPostgresIdempotency, createPostgresStore } = await import(${JSON.stringify(dist)});
      const pool = new pg.Pool({ connectionString: ${JSON.stringify(DATABASE_URL)}, max: 2 });
      const engine = createPostgresIdempotency({
        store: createPostgresStore({ pool, table: ${JSON.stringify(table)}, keyPrefix: ${JSON.stringify(randomName('rcexit'))} }),
      });
      const r = await engine.execute({ key: 'k', scope: 's' }, async ({ tx }) => (await tx.query('SELECT 1 AS one')).rows[0].one);
      await pool.end();
      console.log(JSON.stringify(r));
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    // When the script printed its result (its pool ended): the process's start, imports and
    // execution take seconds on a loaded machine and are not what is judged.
    let printed: number | undefined;
    child.stdout!.on('data', (chunk) => {
      printed ??= performance.now();
      out += chunk;
    });
    const [code] = await once(child, 'exit');
    const exited = performance.now();
    expect(code).toBe(0);
    expect(JSON.parse(out)).toEqual({ value: 1, replayed: false });
    // The renewal connection lingers LINGER_MS (10 s) after its last use; unref'd, it does
    // not hold the process that long after the script's last line.
    expect(exited - printed!).toBeLessThan(LINGER_MS - 2_000);
  }, 90_000);
});
