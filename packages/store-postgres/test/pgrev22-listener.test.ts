import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { RenewalConnection } from '../src/renewal-connection.js';
import { outcome, startPgrev22Proxy } from './pgrev22-proxy.js';
import { localPortOf } from './rcrev2-proxy.js';

/**
 * pgrev22: the pool's 'release' listener is "added when the queue becomes non-empty in
 * dispatch, removed when it empties". But the queue also empties outside dispatch: a failed
 * opening fails the statements that waited for it (open()'s rejection handler dispatches
 * only when some are left), and a statement sent again that waits in the queue is answered
 * by its first send (sendPool's handlers never dispatch). Is the listener gone once the queue
 * is empty, and after pool.end()?
 */
const STATEMENT_MS = 2_000;

describe("pgrev22: the pool's 'release' listener after the queue empties", () => {
  // FIXED (was FINDING LOW): when the queue empties because a failed opening failed its statements, the 'release' listener stays on the pool (listenerCount 1 after the queue emptied and after pool.end()), until some later statement happens to dispatch.
  it('a failed opening empties the queue: no listener left, before or after pool.end()', async () => {
    const proxy = await startPgrev22Proxy();
    const pool = new pg.Pool({ connectionString: proxy.url, max: 1 });
    pool.on('error', () => {});
    const base = pool.listenerCount('release');
    const business = await pool.connect(); // the pool is at max
    proxy.state.mode = 'reset';
    const rc = new RenewalConnection(pool, 1_000, STATEMENT_MS);
    const t0 = performance.now();
    const j = await outcome(
      rc.repeatable.query({ text: 'SELECT 1', query_timeout: 1_000 } as pg.QueryConfig),
      t0,
    );
    await sleep(50);
    const afterQueue = pool.listenerCount('release') - base;
    business.release();
    await pool.end();
    const afterEnd = pool.listenerCount('release') - base;
    proxy.close();
    console.log('pgrev22 listener (failed opening)', { j, afterQueue, afterEnd });
    expect(j).not.toMatch(/^ok/);
    expect([afterQueue, afterEnd]).toEqual([0, 0]);
  }, 10_000);

  // FIXED (was FINDING LOW): when the queue empties because the statement sent again was answered by its first (pool) send, the 'release' listener stays on the pool, after pool.end() too.
  it('a statement sent again answered by its first send: no listener left', async () => {
    const proxy = await startPgrev22Proxy();
    const pool = new pg.Pool({ connectionString: proxy.url, max: 1 });
    pool.on('error', () => {});
    const base = pool.listenerCount('release');
    const a = await pool.connect();
    a.release();
    proxy.hold(localPortOf(a)); // its renewal arrives late, not lost
    proxy.state.mode = 'blackhole'; // the own opening stalls (openMs 3 s)
    const rc = new RenewalConnection(pool, 3_000, STATEMENT_MS);
    const t0 = performance.now();
    const j = outcome(
      rc.repeatable.query({ text: 'SELECT 1', query_timeout: 1_500 } as pg.QueryConfig),
      t0,
    );
    await sleep(700); // sent again at ~500 ms: it waits in the queue
    const whileWaiting = pool.listenerCount('release') - base;
    proxy.release(localPortOf(a)); // the first send is answered
    const result = await j;
    await sleep(50);
    const afterQueue = pool.listenerCount('release') - base;
    await pool.end();
    const afterEnd = pool.listenerCount('release') - base;
    proxy.close();
    console.log('pgrev22 listener (answered late)', { result, whileWaiting, afterQueue, afterEnd });
    expect(result).toMatch(/^ok/);
    expect(whileWaiting).toBe(1);
    expect([afterQueue, afterEnd]).toEqual([0, 0]);
  }, 10_000);
});
