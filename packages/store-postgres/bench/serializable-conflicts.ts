import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { makePool, randomName, sleep } from '../test/pg-env.js';

const pool = makePool({ max: 12 });
const schema = randomName('probe');
await pool.query(`CREATE SCHEMA ${schema}`);
const table = `${schema}.idem_records`;
const store = createPostgresStore({ pool, table });
await store.ensureSchema();
await pool.query(`CREATE TABLE ${schema}.c (id bigserial PRIMARY KEY, k text)`);
for (const level of ['read committed', 'repeatable read', 'serializable'] as const) {
  const engine = createPostgresIdempotency<number>({
    store,
    isolationLevel: level,
    heartbeatMs: false,
  });
  const counts: Record<string, number> = {};
  for (let round = 0; round < 5; round++) {
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) =>
        engine.execute({ key: `${level}-${round}-${i}`, scope: 's' }, async ({ tx }) => {
          await tx.query(`INSERT INTO ${schema}.c (k) VALUES ($1)`, [String(i)]);
          await sleep(Number(process.env.OPMS ?? 50));
          return i;
        }),
      ),
    );
    for (const r of results) {
      const k = r.status === 'fulfilled' ? 'ok' : (r.reason as Error).constructor.name;
      counts[k] = (counts[k] ?? 0) + 1;
    }
  }
  console.log(level, JSON.stringify(counts));
}
await pool.query(`DROP SCHEMA ${schema} CASCADE`);
await pool.end();
