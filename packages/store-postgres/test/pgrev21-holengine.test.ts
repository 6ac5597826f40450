import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { randomName } from './pg-env.js';
import { ownSetUpStalls } from './pgrev21-proxy.js';
import { localPortOf } from './rcrev2-proxy.js';
import { startRcrev3Proxy } from './rcrev3-proxy.js';

/**
 * pgrev21: the head-of-line blocking of pgrev21-hol through the engine. One owner (lease
 * 1.5 s, heartbeats every 250 ms, the default 2 s statement limit); its renewals go to an
 * idle pool connection. That connection's flow is frozen (a NAT dropped it) while the own
 * connection's set-up stalls (a server slow to set up new sessions). A second idle pool
 * connection stays healthy the whole time. Is the healthy owner aborted?
 */
const table = inject('pgTable');
const STATEMENT_MS = 2_000;

describe('pgrev21: a frozen pool connection and a stalled own opening, through the engine', () => {
  // FIXED (was FINDING MEDIUM): one renewal sent again (its pool flow frozen) waits at the head of the queue for a stalled own opening and holds back the owner's later renewals although a healthy pool connection is idle; the healthy owner's lease lapses and it is aborted (LeaseLostError).
  for (const ownStalls of [true, false])
    it(`own opening ${ownStalls ? 'stalls' : 'healthy (control)'}: the healthy owner is not aborted while a healthy pool connection is idle`, async () => {
      const proxy = await startRcrev3Proxy();
      const pool = new pg.Pool({
        connectionString: proxy.url,
        max: 4,
        onConnect: ownSetUpStalls(STATEMENT_MS, () => ownStalls),
      } as unknown as pg.PoolConfig);
      pool.on('error', () => {});
      // The renewals sent to the pool after the freeze (pool.query: the renewal routes' pool send).
      const pooled: number[] = [];
      const query = pool.query.bind(pool) as (...args: unknown[]) => unknown;
      (pool as unknown as { query: (...args: unknown[]) => unknown }).query = (
        ...args: unknown[]
      ) => {
        if (frozeAt > 0) pooled.push(Math.round(performance.now() - frozeAt));
        return query(...args);
      };
      let aborted: number | undefined;
      let frozeAt = 0;
      try {
        const store = createPostgresStore({
          pool,
          table,
          keyPrefix: randomName('p21he'),
          statementTimeoutMs: STATEMENT_MS,
        });
        const engine = createPostgresIdempotency<string>({
          store,
          leaseMs: 1_500,
          heartbeatMs: 250,
        });
        // Two idle pool connections besides the owner's.
        const warm = [await pool.connect(), await pool.connect()];
        for (const c of warm) c.release();
        const run = engine
          .execute({ key: 'k', scope: randomName('scope') }, async ({ signal }) => {
            signal.addEventListener('abort', () => {
              aborted ??= performance.now() - frozeAt;
            });
            const until = performance.now() + 4_500;
            while (performance.now() < until) {
              signal.throwIfAborted();
              await sleep(50);
            }
            return 'done';
          })
          .then(
            (r) => `ok ${r.value}`,
            (e: unknown) => (e as Error).name,
          );
        await sleep(700);
        // The idle connection the next renewal takes (the pool's idle stack is LIFO). Under
        // CI's load a renewal may still hold it: looked at again until one is idle (3 s at most).
        const idle = (pool as unknown as { _idle: { client: pg.PoolClient }[] })._idle;
        for (let i = 0; i < 300 && idle.length === 0; i++) await sleep(10);
        const top = idle[idle.length - 1]?.client;
        expect(top).toBeDefined();
        frozeAt = performance.now();
        proxy.freeze(localPortOf(top));
        const outcome = await run;
        console.log('pgrev21 holengine', {
          ownStalls,
          outcome,
          abortedAfterFreezeMs: aborted,
          pooledAfterFreeze: pooled,
          idle: pool.idleCount,
        });
        expect(aborted).toBeUndefined();
        expect(outcome).toBe('ok done');
      } finally {
        await Promise.race([pool.end(), sleep(3_000)]);
        proxy.close();
      }
    }, 15_000);
});
