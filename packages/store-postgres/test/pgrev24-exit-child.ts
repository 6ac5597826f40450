import pg from 'pg';
import { RenewalConnection } from '../src/renewal-connection.js';

/**
 * pgrev24-exit's child: the pool's one connection is held (opened while the parent's proxy
 * passes), then every new connection is blackholed: the own opening and its hedge hang. The
 * business connection is released and the pool ended while both openings and the waiting
 * statements are pending; the parent measures how long the process lives after that.
 */
const url = process.argv[2] as string;
const pool = new pg.Pool({ connectionString: url, max: 1 });
pool.on('error', () => {});
const business = await pool.connect();
console.log(JSON.stringify({ step: 'held' }));
// The parent switches the proxy to blackhole on this line.
await new Promise((resolve) => setTimeout(resolve, 300));
const rc = new RenewalConnection(pool, 8_000, 2_000, 10_000);
const done = rc.use();
const inner = rc as unknown as { attempts: number; growTimer?: NodeJS.Timeout };
const pending: Promise<unknown>[] = [];
for (let i = 0; i < 5; i++)
  pending.push(
    rc.repeatable
      .query({ text: 'select 1', query_timeout: 1_500 + i * 1_000 } as pg.QueryConfig)
      .catch(() => {}),
  );
pending.push(rc.query({ text: 'select 1' }).catch(() => {}));
await new Promise((resolve) => setTimeout(resolve, 900));
done();
business.release();
await pool.end();
console.log(
  JSON.stringify({
    step: 'ended',
    ended: performance.now(),
    attempts: inner.attempts,
    timer: inner.growTimer?.hasRef() ?? null,
  }),
);
