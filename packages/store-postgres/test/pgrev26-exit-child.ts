import pg from 'pg';
import { RenewalConnection } from '../src/renewal-connection.js';

/**
 * pgrev26-exit's child: pool max 2 (no connectionTimeoutMillis) behind the parent's proxy, one
 * connection held by a business transaction. The own connection opens, then is made suspect
 * (a slow statement sent with ~60 ms left times out). The parent then blackholes new
 * connections. A slow renewal on the suspect connection has it destroyed by the probe; the
 * renewal is sent again: an own opening (blackholed), a grown pool connection (blackholed,
 * the pool now at max), two more renewals: a hedge beside the stalled opening, the wake timer
 * armed. Then the business connection is released and pool.end() called (not awaited).
 */
const url = process.argv[2] as string;
const say = (o: object) => console.log(JSON.stringify(o));
const pool = new pg.Pool({ connectionString: url, max: 2 });
pool.on('error', () => {});
const business = await pool.connect();
// Held while the suspect is made (the pool at max: no grown connection takes S1), then removed.
const second = await pool.connect();
const rc = new RenewalConnection(pool, 8_000, 2_000, 10_000);
const inner = rc as unknown as {
  client?: unknown;
  suspect?: unknown;
  attempts: number;
  hedging?: unknown;
  growTimer?: NodeJS.Timeout;
};
const done = rc.use();
for (let i = 0; i < 100 && inner.client === undefined; i++)
  await new Promise((r) => setTimeout(r, 10));
const q = (text: string, ms: number) =>
  rc.repeatable.query({ text, query_timeout: ms } as pg.QueryConfig).catch(() => {});
await Promise.all([q('SELECT pg_sleep(0.2)', 1_000), q('SELECT pg_sleep(0.1)', 260)]);
say({ step: 'suspect', suspect: inner.suspect === inner.client && inner.client !== undefined });
// The parent blackholes new connections on this line.
await new Promise((r) => setTimeout(r, 200));
second.release(true);
// The own connection dies here. (It used to be destroyed by the suspect probe under the slow
// renewal below; since pgrev26's fix the late answer of the statement that timed out clears
// the suspicion, so the child ends the connection itself to reach the same state.)
(inner.client as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
const pending = [q('SELECT pg_sleep(1)', 1_500)];
await new Promise((r) => setTimeout(r, 600));
pending.push(q('SELECT 1', 3_000), q('SELECT 1', 4_000));
pending.push(rc.query({ text: 'SELECT 1' }).catch(() => {}));
await new Promise((r) => setTimeout(r, 1_300));
const before = {
  attempts: inner.attempts,
  hedging: inner.hedging !== undefined,
  timer: inner.growTimer !== undefined,
  total: pool.totalCount,
  grownConnecting: (pool as unknown as { _clients: { _connected?: boolean }[] })._clients.filter(
    (c) => !c._connected,
  ).length,
};
done();
business.release();
void pool.end();
say({ step: 'ended', ...before });
