import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { harness, type Step, settle, until } from './pgrev24-harness.js';

/**
 * pgrev24: a seeded random mix against the routes. Each own opening stalls (30%), is refused
 * (20%) or connects after 0-400 ms; openMs 1.5 s. The pool (max 2) has one connection held
 * throughout and a second one taken and given back every 300 ms; the own connection's backend
 * is terminated every 400 ms. 60 statements over ~3 s, limits 300-1500 ms, renewals and
 * terminations mixed, each a 30 ms statement.
 */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

describe('pgrev24: random stalls, refusals and kills', () => {
  for (const seed of [7, 2024])
    it(`seed ${seed}: every statement settles within its limit, one send at a time on the own connection, nothing left open`, async () => {
      const random = rng(seed);
      const script = (): Step => {
        const x = random();
        return x < 0.3 ? 'stall' : x < 0.5 ? 'fail' : Math.floor(random() * 400);
      };
      const h = harness({ max: 2, openMs: 1_500, script });
      await h.admin.connect();
      const held = await h.pool.connect();
      let chaos = true;
      const toggler = (async () => {
        for (let i = 0; i < 40 && chaos; i++) {
          const c = await h.pool.connect();
          await sleep(300);
          c.release();
          await sleep(50);
        }
      })();
      const killer = (async () => {
        for (let i = 0; i < 40 && chaos; i++) {
          await sleep(400);
          await h.admin.query(
            'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1',
            [`${h.tag}-own`],
          );
        }
      })();
      const t0 = performance.now();
      const late: string[] = [];
      const all: Promise<string>[] = [];
      for (let i = 0; i < 60; i++) {
        const limit = 300 + Math.floor(random() * 1_200);
        const config = {
          text: 'select pg_sleep(0.03), 1 AS one',
          query_timeout: limit,
        } as pg.QueryConfig;
        const start = performance.now();
        const done = () => {
          const took = performance.now() - start;
          if (took > limit + 300) late.push(`#${i} ${Math.round(took)}/${limit}`);
        };
        const p = random() < 0.8 ? h.rc.repeatable.query(config) : h.rc.query(config);
        p.then(done, done);
        all.push(settle(p, t0));
        await sleep(random() * 100);
      }
      const outcomes = await Promise.all(all);
      chaos = false;
      await Promise.all([toggler, killer]);
      held.release();
      // Every stalled opening given up (openMs) before the pool ends.
      await until(() => h.stats.running === 0, 3_000);
      await Promise.race([h.pool.end(), sleep(2_000)]);
      await sleep(300);
      const own = await h.backends('own');
      await h.admin.end();
      const tally: Record<string, number> = {};
      for (const o of outcomes) {
        const k = o.replace(/ \d+$/, '').slice(0, 30);
        tally[k] = (tally[k] ?? 0) + 1;
      }
      console.log(`pgrev24 stress ${seed}`, { tally, late, stats: h.stats, own });
      expect(outcomes).toHaveLength(60);
      expect(late).toEqual([]);
      expect(h.stats.maxOwnSends).toBeLessThanOrEqual(1);
      expect(own).toBe(0);
      expect(h.stats.connectEvents).toBe(h.stats.removeEvents);
      expect(h.pool.listenerCount('release')).toBe(0);
      expect(h.inner.attempts).toBe(0);
      expect(tally.ok).toBeGreaterThan(0);
    }, 15_000);
});
