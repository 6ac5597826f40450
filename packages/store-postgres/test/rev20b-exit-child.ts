/** rev20b-exit's child: a store whose extend used its own connection, then the pool ended (or left idle). */
import pg from 'pg';
import { createPostgresStore } from '../src/index.js';

const [url, table, mode] = process.argv.slice(2) as [string, string, string];
const pool = new pg.Pool({ connectionString: url, max: 1, allowExitOnIdle: mode === 'idle' });
pool.on('error', () => {});
const store = createPostgresStore({ pool, table, keyPrefix: `exit${process.pid}` });
const key = `k${Date.now()}`;
const owner = `o${process.pid}`;
await store.acquire({ key, fingerprint: 'f', owner, leaseMs: 30_000, retentionMs: 60_000 });
const busy = await pool.connect();
const renewed = await store.extend({ key, owner, leaseMs: 30_000, retentionMs: 60_000 });
busy.release();
if (mode === 'end') await pool.end();
process.stdout.write(`${JSON.stringify({ ended: performance.now(), ok: renewed.ok })}\n`);
