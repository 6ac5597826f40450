/**
 * rev13 adversarial review: a Redis Cluster of its own (3 primaries, no replicas) through a
 * long outage of one primary (kill -9, 8 s down, restarted from its nodes.conf) and of all
 * of them. With the recommended Cluster options, every call must stay bounded during it, and
 * afterwards calls on keys of every slot must succeed again by themselves, without a new
 * client.
 */
import { randomBytes } from 'node:crypto';
import { createIdempotency } from '@idem/core';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, recommendedRedisClusterOptions } from '../src/index.js';
import { type Outcome, timed } from './batchrev-timed.js';
import {
  cli,
  type RedisServer,
  redisBinariesAvailable,
  restartRedisServer,
  signalRedisServer,
  startCluster,
  stopRedisServer,
} from './redis-servers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

async function clusterOk(servers: RedisServer[], withinMs: number): Promise<boolean> {
  const until = performance.now() + withinMs;
  while (performance.now() < until) {
    try {
      const states = await Promise.all(servers.map((s) => cli(s, 'cluster', 'info')));
      if (states.every((s) => s.includes('cluster_state:ok'))) return true;
    } catch {}
    await sleep(200);
  }
  return false;
}

describe('rev13: Cluster outages (own 3-primary Cluster)', () => {
  let servers: RedisServer[] = [];
  let client: Cluster;
  beforeAll(async () => {
    servers = await startCluster(3);
    client = new Cluster(
      servers.map((s) => ({ host: '127.0.0.1', port: s.port })),
      {
        ...recommendedRedisClusterOptions({ commandTimeoutMs: 1_000, maxReconnectDelayMs: 300 }),
        lazyConnect: true,
      },
    );
    client.on('error', () => {});
    await client.connect();
  }, 60_000);
  afterAll(async () => {
    client?.disconnect();
    for (const s of servers) await stopRedisServer(s);
  });

  const engine = () => {
    const store = createRedisStore({
      client,
      keyPrefix: `r13c:${randomBytes(3).toString('hex')}:`,
    });
    const idem = createIdempotency<string>({ store, storeTimeoutMs: 2_500 });
    const runs = new Map<string, number>();
    const run = (key: string) =>
      timed(key, 15_000, () =>
        idem.execute({ key, scope: 's' }, async () => {
          runs.set(key, (runs.get(key) ?? 0) + 1);
          return `v-${key}`;
        }),
      );
    return { run, runs };
  };

  /** Until every one of `keys` (spread over all slots) answers, at most `withinMs`. */
  async function allAnswer(run: (key: string) => Promise<Outcome>, tag: string, withinMs: number) {
    const started = performance.now();
    const keys = Array.from({ length: 30 }, (_, i) => `${tag}${i}`);
    let last: Outcome[] = [];
    while (performance.now() - started < withinMs) {
      last = await Promise.all(keys.map(run));
      if (last.every((o) => o.ok)) return { ms: performance.now() - started, last };
      await sleep(200);
    }
    return { ms: -1, last };
  }

  it('one primary killed for 8 s, then restarted: bounded meanwhile, every slot answers again by itself', {
    timeout: 30_000,
  }, async () => {
    const { run, runs } = engine();
    expect((await allAnswer(run, 'warm', 5_000)).ms).toBeGreaterThanOrEqual(0);
    const victim = servers[1] as RedisServer;
    await signalRedisServer(victim, 'SIGKILL');
    const during: Outcome[] = [];
    const until = performance.now() + 8_000;
    while (performance.now() < until) {
      during.push(
        ...(await Promise.all(Array.from({ length: 6 }, (_, i) => run(`d${during.length}-${i}`)))),
      );
      await sleep(300);
    }
    servers[1] = await restartRedisServer(victim);
    const ok = await clusterOk(servers, 20_000);
    const back = await allAnswer(run, 'after', 15_000);
    const twice = [...runs.values()].filter((n) => n > 1).length;
    console.log(
      `[rev13 cluster one] clusterOk=${ok} during=${during.length} duringOk=${during.filter((o) => o.ok).length} maxMs=${Math.max(...during.map((o) => o.ms))} ` +
        `backMs=${Math.round(back.ms)} lastErrors=${JSON.stringify([...new Set(back.last.filter((o) => !o.ok).map((o) => o.error))])} status=${client.status} twice=${twice}`,
    );
    expect(ok).toBe(true);
    expect(during.filter((o) => o.error === 'HUNG')).toEqual([]);
    expect(Math.max(...during.map((o) => o.ms))).toBeLessThan(2_500 + 1_500);
    expect(back.ms).toBeGreaterThanOrEqual(0);
    expect(twice).toBe(0);
  });

  it('every primary killed for 8 s, then restarted: every slot answers again by itself', {
    timeout: 30_000,
  }, async () => {
    const { run, runs } = engine();
    expect((await allAnswer(run, 'warm', 10_000)).ms).toBeGreaterThanOrEqual(0);
    for (const s of servers) await signalRedisServer(s, 'SIGKILL');
    const during: Outcome[] = [];
    const until = performance.now() + 8_000;
    while (performance.now() < until) {
      during.push(
        ...(await Promise.all(Array.from({ length: 6 }, (_, i) => run(`d${during.length}-${i}`)))),
      );
      await sleep(300);
    }
    for (let i = 0; i < servers.length; i++)
      servers[i] = await restartRedisServer(servers[i] as RedisServer);
    const ok = await clusterOk(servers, 20_000);
    const back = await allAnswer(run, 'after', 15_000);
    const twice = [...runs.values()].filter((n) => n > 1).length;
    console.log(
      `[rev13 cluster all] clusterOk=${ok} during=${during.length} maxMs=${Math.max(...during.map((o) => o.ms))} ` +
        `backMs=${Math.round(back.ms)} lastErrors=${JSON.stringify([...new Set(back.last.filter((o) => !o.ok).map((o) => o.error))])} status=${client.status} twice=${twice}`,
    );
    expect(ok).toBe(true);
    expect(during.filter((o) => o.error === 'HUNG')).toEqual([]);
    expect(back.ms).toBeGreaterThanOrEqual(0);
    expect(twice).toBe(0);
  });
});
