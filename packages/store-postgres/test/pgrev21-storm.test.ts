import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { catalogChange, DATABASE_URL, randomName } from './pg-env.js';
import { startPgrev21Proxy } from './pgrev21-proxy.js';

/**
 * pgrev21: the server refuses new connections (max_connections reached: its pool's own
 * connections still work). Every execution that begins calls use(), which opens the own
 * connection in the background when it is not open: how many connection attempts do 200
 * short executions in about a second make?
 */
const table = inject('pgTable');
const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
const ROLE = 'pgrev21_limited';
beforeAll(async () => {
  // Cluster-wide, created once (never dropped while another run may use it).
  await admin.query(`DO $$ BEGIN
      CREATE ROLE ${ROLE} LOGIN CONNECTION LIMIT 4;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$`);
  await admin.query(`ALTER ROLE ${ROLE} CONNECTION LIMIT 4`);
  const schema = inject('pgSchema');
  await catalogChange(admin, `GRANT USAGE, CREATE ON SCHEMA "${schema}" TO ${ROLE}`);
  await catalogChange(admin, `GRANT ALL ON ALL TABLES IN SCHEMA "${schema}" TO ${ROLE}`);
  await catalogChange(admin, `GRANT ALL ON ALL SEQUENCES IN SCHEMA "${schema}" TO ${ROLE}`);
  await catalogChange(admin, `GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA "${schema}" TO ${ROLE}`);
});
afterAll(() => admin.end());

describe('pgrev21: connection attempts while the server refuses new ones', () => {
  // FIXED (was FINDING MEDIUM): with new connections refused, every execution start begins a new opening of the own connection (no back-off after a failed one): 200 executions in ~1 s make ~200 connection attempts to a server that is already out of connections.
  for (const how of ['proxy resets', 'role CONNECTION LIMIT (real FATAL 53300)'] as const)
    it(`${how}: 200 short executions make a bounded number of connection attempts`, async () => {
      const proxy = await startPgrev21Proxy();
      const app = randomName('pgrev21st');
      const url = new URL(proxy.url);
      if (how !== 'proxy resets') url.username = ROLE;
      const pool = new pg.Pool({ connectionString: url.toString(), max: 4, application_name: app });
      pool.on('error', () => {});
      try {
        const store = createPostgresStore({
          pool,
          table,
          keyPrefix: randomName('p21st'),
          statementTimeoutMs: 1_000,
        });
        const engine = createPostgresIdempotency<string>({
          store,
          leaseMs: 2_000,
          heartbeatMs: 500,
        });
        // Warm the pool: four connections open and idle.
        const warm = await Promise.all([1, 2, 3, 4].map(() => pool.connect()));
        for (const c of warm) c.release();
        if (how === 'proxy resets') proxy.state.mode = 'reset';
        const before = proxy.state.accepted;
        const scope = randomName('scope');
        let ok = 0;
        const t0 = performance.now();
        for (let i = 0; i < 200; i++) {
          await engine.execute({ key: `k${i}`, scope }, async () => 'v');
          ok++;
        }
        const ms = Math.round(performance.now() - t0);
        const attempts = proxy.state.accepted - before;
        console.log('pgrev21 storm', how, { ok, ms, attempts });
        expect(ok).toBe(200);
        expect(attempts).toBeLessThanOrEqual(20);
      } finally {
        proxy.state.mode = 'pass';
        await pool.end();
        proxy.close();
      }
    });
});
