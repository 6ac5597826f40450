import { once } from 'node:events';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { LINGER_MS, RenewalConnection } from '../src/renewal-connection.js';
import { DATABASE_URL, makePool, randomName, sleep } from './pg-env.js';
import { insertCharge } from './take-over.js';

/**
 * rcrev: lifecycle of the renewal connection (opening, replacing, lingering, closing), the
 * pool's events on it, and a renewal connection that falls silent mid-renewal under a
 * running engine.
 */
const schema = inject('pgSchema');
const table = inject('pgTable');
const charges = `"${schema}".rcrev_life_charges`;
const raw = makePool({ max: 3 });
const url = new URL(DATABASE_URL);

beforeAll(async () => {
  await raw.query(`CREATE TABLE IF NOT EXISTS ${charges} (
    id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`);
});
afterAll(() => raw.end());

const backends = async (app: string) =>
  Number(
    (
      await raw.query(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1',
        [app],
      )
    ).rows[0].n,
  );

/**
 * A proxy that, once `armed`, makes the connection that renews (the first to prepare
 * `renew_held`: only the renewal connection does) silent both ways for good at its next
 * statement, its socket kept open.
 */
async function startRenewalSilencer(): Promise<{
  port: number;
  armed: boolean;
  silenced: number;
  close(): void;
}> {
  const sockets = new Set<Socket>();
  const dead = new Set<Socket>();
  const state = {
    port: 0,
    armed: false,
    silenced: 0,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
  const server: Server = createServer((client) => {
    const upstream = createConnection({ host: url.hostname, port: Number(url.port || 5432) });
    sockets.add(client);
    sockets.add(upstream);
    let renewer = false;
    client.on('data', (chunk: Buffer) => {
      // Its first renewal prepares the statement (its text names the function); later ones
      // only bind it: the connection is known as the renewer from then on.
      if (chunk.includes('_renew_held')) renewer = true;
      if (state.armed && renewer && !dead.has(client)) {
        state.armed = false;
        state.silenced++;
        dead.add(client);
      }
      if (!dead.has(client)) upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!dead.has(client)) client.write(chunk);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  state.port = (server.address() as { port: number }).port;
  return state;
}

describe('rcrev: renewal connection lifecycle', () => {
  // Held: a renewal connection that falls silent mid-renewal (socket open, nothing answered)
  // is dropped at the statement limit and replaced; the owner's signal never aborts and its
  // one business row commits.
  it('an owner whose renewal connection falls silent mid-renewal keeps its lease', async () => {
    const proxy = await startRenewalSilencer();
    const via = new URL(DATABASE_URL);
    via.hostname = '127.0.0.1';
    via.port = String(proxy.port);
    const pool = makePool({ connectionString: via.toString(), max: 2 });
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({
        pool,
        table,
        keyPrefix: randomName('sil'),
        statementTimeoutMs: 800,
      }),
      leaseMs: 2_000,
      heartbeatMs: 300,
    });
    await pool.query('SELECT 1');
    const scope = randomName('scope');
    let aborted = false;
    try {
      const result = await engine.execute({ key: 'k', scope }, async ({ tx, fence, signal }) => {
        signal.addEventListener('abort', () => {
          aborted = true;
        });
        await insertCharge(tx, charges, scope, fence);
        await sleep(400);
        proxy.armed = true;
        await sleep(3_000);
        return 'done';
      });
      expect(proxy.silenced).toBe(1);
      expect(result).toEqual({ value: 'done', replayed: false });
      expect(aborted).toBe(false);
      const { rows } = await raw.query(`SELECT fence FROM ${charges} WHERE scope = $1`, [scope]);
      expect(rows.map((r) => Number(r.fence))).toEqual([1]);
    } finally {
      proxy.close();
      await pool.end().catch(() => {});
    }
  });

  // Held: many executions (three waves of ten, each holding across heartbeats) open one
  // renewal connection besides the pool's (never more than pool max + 1 backends), add no
  // listeners to the pool, and the renewal connection is closed LINGER_MS after the last.
  it('thirty executions: at most pool max + 1 backends, no listener growth, closed after the linger', async () => {
    const app = randomName('rcrev-life');
    const pool = makePool({ max: 10, application_name: app });
    const listenersBefore = pool.eventNames().map((n) => [n, pool.listenerCount(n)]);
    const engine = createPostgresIdempotency<string>({
      store: createPostgresStore({ pool, table, keyPrefix: randomName('life') }),
      leaseMs: 1_000,
      heartbeatMs: 200,
    });
    const scope = randomName('scope');
    let most = 0;
    let stop = false;
    const watch = (async () => {
      while (!stop) {
        most = Math.max(most, await backends(app));
        await sleep(100);
      }
    })();
    try {
      for (let wave = 0; wave < 3; wave++) {
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            engine.execute({ key: `w${wave}-${i}`, scope }, async ({ tx, fence }) => {
              await insertCharge(tx, charges, scope, fence);
              await sleep(600);
              return 'ok';
            }),
          ),
        );
        expect(results.every((r) => r.value === 'ok')).toBe(true);
      }
      stop = true;
      await watch;
      expect(most).toBeLessThanOrEqual(11);
      expect(pool.eventNames().map((n) => [n, pool.listenerCount(n)])).toEqual(listenersBefore);
      await pool.end();
      // Only the renewal connection is left, until its linger passes (the pool's backends
      // take a moment to leave pg_stat_activity). The pool ended, so the renewal connection
      // may close at its next check (every 200 ms) before the pool's backends are all gone:
      // at most one left, then none.
      for (let i = 0; i < 40 && (await backends(app)) > 1; i++) await sleep(25);
      expect(await backends(app)).toBeLessThanOrEqual(1);
      await sleep(LINGER_MS + 800);
      expect(await backends(app)).toBe(0);
    } finally {
      stop = true;
      await pool.end().catch(() => {});
    }
  }, 30_000);

  // FIXED (the pool's 'remove' listeners hear of each renewal client its 'connect' listeners
  // saw, when it is closed). FINDING (LOW): the pool's 'connect' event is emitted on the renewal connection, but no
  // matching 'remove' (pg-pool emits 'remove' for every client it closes) when it is closed
  // after its linger, destroyed or replaced. Code that tracks the pool's clients with
  // connect/remove (metrics gauges, a Set of clients to configure or close) grows by one entry
  // (and retains a dead Client) on every reopen: once per idle period of 10 s, once per
  // replacement. Repro: five use/linger cycles on a RenewalConnection with a 100 ms linger:
  // five 'connect', zero 'remove'. Suggested fix: emit 'remove' on the pool when the renewal
  // client is closed/destroyed (pg-pool's own contract), or do not emit pool events on it and
  // document a separate hook for session set-up.
  it("every 'connect' the pool's listeners see is matched by a 'remove' when that client is closed", async () => {
    const pool = makePool({ max: 1 });
    const tracked = new Set<unknown>();
    pool.on('connect', (c) => tracked.add(c));
    pool.on('remove', (c) => tracked.delete(c));
    const connection = new RenewalConnection(pool, 2_000, 2_000, 100);
    try {
      for (let i = 0; i < 5; i++) {
        const done = connection.use();
        await connection.query({ text: 'SELECT 1' });
        done();
        await sleep(300); // past the linger: closed
      }
      expect(tracked.size).toBe(0);
    } finally {
      await pool.end();
    }
  });

  // Held: an 'error' arriving on a renewal client after it was destroyed or replaced does not
  // crash the process (its listener stays attached).
  it('an error emitted on a replaced renewal client is absorbed', async () => {
    const pool = makePool({ max: 1 });
    const clients: import('pg').Client[] = [];
    pool.on('connect', (c) => clients.push(c as never));
    const connection = new RenewalConnection(pool, 2_000, 2_000, 100);
    try {
      await connection.query({ text: 'SELECT 1' });
      const first = clients[0]!;
      const pid = (first as unknown as { processID: number }).processID;
      await raw.query('SELECT pg_terminate_backend($1)', [pid]);
      await sleep(200);
      await connection.query({ text: 'SELECT 1' });
      expect(clients.length).toBe(2);
      expect(() => first.emit('error', new Error('late'))).not.toThrow();
      expect(() => clients[1]!.emit('error', new Error('now'))).not.toThrow();
      await sleep(50);
      await connection.query({ text: 'SELECT 1' });
      expect(clients.length).toBe(3);
    } finally {
      await pool.end();
    }
  });
});
