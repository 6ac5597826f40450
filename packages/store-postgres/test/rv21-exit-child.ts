/** rv21-final-route's child: a completion that took the renewal route (the pool's one connection busy), then idle. */
import pg from 'pg';
import { createPostgresStore } from '../src/index.js';

const [url, table] = process.argv.slice(2) as [string, string];
const pool = new pg.Pool({ connectionString: url, max: 1, allowExitOnIdle: true });
pool.on('error', () => {});
const store = createPostgresStore({ pool, table, keyPrefix: `rv21exit${process.pid}` });
const lease = { key: `k${Date.now()}`, owner: `o${process.pid}`, retentionMs: 60_000 };
await store.acquire({ ...lease, fingerprint: 'f', leaseMs: 30_000 });
const busy = await pool.connect();
const completed = await store.complete({ ...lease, outcome: new Uint8Array([1, 2, 3]) });
busy.release();
process.stdout.write(`${JSON.stringify({ ended: performance.now(), ok: completed.ok })}\n`);
