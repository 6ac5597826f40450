/**
 * rev13 adversarial review: exactly-once and recovery of the Redis store driven by core's
 * engine, two "processes" (two clients, two engines) on one private redis-server, through
 * faults: kill -9 with a long outage then restart (AOF always), SIGSTOP, and a proxy that
 * blackholes every connection it has (then heals for new connections only).
 */
import { randomBytes } from 'node:crypto';
import { createIdempotency } from '@idem/core';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedisStore, recommendedRedisOptions } from '../src/index.js';
import { type Outcome, timed } from './batchrev-timed.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  restartRedisServer,
  signalRedisServer,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const COMMAND_TIMEOUT = 1_000;
const STORE_TIMEOUT = 2_500;

function clientOf(port: number): Redis {
  const client = new Redis({
    host: '127.0.0.1',
    port,
    ...recommendedRedisOptions({ commandTimeoutMs: COMMAND_TIMEOUT, maxReconnectDelayMs: 300 }),
    lazyConnect: true,
  });
  client.on('error', () => {});
  return client;
}

async function readyWithin(client: Redis, ms: number): Promise<boolean> {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    if (client.status === 'ready') {
      try {
        await client.ping();
        return true;
      } catch {}
    }
    await sleep(20);
  }
  return false;
}

/** Two engines (two clients) on one prefix, a ledger of runs per key. */
function fleet(clients: Redis[], prefix: string) {
  const runs = new Map<string, number>();
  const engines = clients.map((client) =>
    createIdempotency<string>({
      store: createRedisStore({ client, keyPrefix: prefix }),
      leaseMs: 30_000,
      heartbeatMs: 10_000,
      storeTimeoutMs: STORE_TIMEOUT,
    }),
  );
  const run = (engine: number, key: string, workMs: number) =>
    timed(key, 20_000, () =>
      engines[engine]!.execute({ key, scope: 's' }, async () => {
        runs.set(key, (runs.get(key) ?? 0) + 1);
        await sleep(workMs);
        return `v-${key}`;
      }),
    );
  return { runs, run };
}

// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();
const started: RedisServer[] = [];
const opened: Redis[] = [];
afterAll(async () => {
  for (const c of opened) c.disconnect();
  for (const s of started) await stopRedisServer(s);
});

describe('rev13: faults through the engine (private redis-server)', () => {
  it('kill -9 during load, 8 s down (past every backoff and retry flush), restart with AOF always: calls bounded, service returns by itself, no key runs twice', {
    timeout: 30_000,
  }, async () => {
    let server = await startRedisServer(['--appendonly', 'yes', '--appendfsync', 'always']);
    started.push(server);
    const a = clientOf(server.port);
    const b = clientOf(server.port);
    opened.push(a, b);
    await a.connect();
    await b.connect();
    const { runs, run } = fleet([a, b], `r13k:${randomBytes(3).toString('hex')}:`);
    const keys = Array.from({ length: 40 }, (_, i) => `k${i}`);
    // In flight at the kill: both engines on every key, operations 0-400 ms long.
    const first = Promise.all(
      keys.flatMap((key) => [run(0, key, Math.random() * 400), run(1, key, Math.random() * 400)]),
    );
    await sleep(150);
    await signalRedisServer(server, 'SIGKILL');
    const during: Outcome[] = [];
    const downUntil = performance.now() + 8_000;
    while (performance.now() < downUntil) {
      during.push(...(await Promise.all(keys.slice(0, 5).map((key) => run(0, key, 0)))));
      await sleep(500);
    }
    server = await restartRedisServer(server);
    started.push(server);
    const restartedAt = performance.now();
    const backA = await readyWithin(a, 5_000);
    const backB = await readyWithin(b, 5_000);
    const readyMs = performance.now() - restartedAt;
    const firstOutcomes = await first;
    // After the outage: every key again on both engines until all answer a final outcome.
    const after: Outcome[] = [];
    for (let round = 0; round < 6; round++) {
      const outs = await Promise.all(keys.flatMap((key) => [run(0, key, 0), run(1, key, 0)]));
      after.push(...outs);
      if (outs.every((o) => o.ok)) break;
      await sleep(500);
    }
    const twice = [...runs.entries()].filter(([, n]) => n > 1);
    const all = [...firstOutcomes, ...during, ...after];
    const maxMs = Math.max(...all.map((o) => o.ms));
    console.log(
      `[rev13 kill] readyMs=${Math.round(readyMs)} backA=${backA} backB=${backB} during=${during.length} duringOk=${during.filter((o) => o.ok).length} ` +
        `firstErrors=${JSON.stringify(firstOutcomes.filter((o) => !o.ok).map((o) => o.error))} twice=${JSON.stringify(twice)} maxMs=${maxMs} ` +
        `lastRoundOk=${after.slice(-80).filter((o) => o.ok).length}`,
    );
    expect(backA && backB).toBe(true);
    expect(all.filter((o) => o.error === 'HUNG')).toEqual([]);
    expect(twice).toEqual([]);
    expect(after.slice(-80).every((o) => o.ok)).toBe(true);
  });

  it('SIGSTOP for 6 s during load: calls bounded, service returns, no key runs twice', {
    timeout: 30_000,
  }, async () => {
    const server = await startRedisServer();
    started.push(server);
    const a = clientOf(server.port);
    const b = clientOf(server.port);
    opened.push(a, b);
    await a.connect();
    await b.connect();
    const { runs, run } = fleet([a, b], `r13s:${randomBytes(3).toString('hex')}:`);
    const keys = Array.from({ length: 40 }, (_, i) => `k${i}`);
    const first = Promise.all(
      keys.flatMap((key) => [run(0, key, Math.random() * 400), run(1, key, Math.random() * 400)]),
    );
    await sleep(100);
    await signalRedisServer(server, 'SIGSTOP');
    const during: Outcome[] = [];
    const stopUntil = performance.now() + 6_000;
    while (performance.now() < stopUntil) {
      during.push(...(await Promise.all(keys.slice(0, 5).map((key) => run(1, key, 0)))));
      await sleep(300);
    }
    await signalRedisServer(server, 'SIGCONT');
    const contAt = performance.now();
    const back = (await readyWithin(a, 5_000)) && (await readyWithin(b, 5_000));
    const readyMs = performance.now() - contAt;
    const firstOutcomes = await first;
    const after: Outcome[] = [];
    for (let round = 0; round < 6; round++) {
      const outs = await Promise.all(keys.flatMap((key) => [run(0, key, 0), run(1, key, 0)]));
      after.push(...outs);
      if (outs.every((o) => o.ok)) break;
      await sleep(500);
    }
    const twice = [...runs.entries()].filter(([, n]) => n > 1);
    const all = [...firstOutcomes, ...during, ...after];
    console.log(
      `[rev13 stop] readyMs=${Math.round(readyMs)} back=${back} during=${during.length} maxMs=${Math.max(...all.map((o) => o.ms))} ` +
        `firstErrors=${JSON.stringify(firstOutcomes.filter((o) => !o.ok).map((o) => o.error))} twice=${JSON.stringify(twice)} ` +
        `lastRoundErrors=${JSON.stringify(
          after
            .slice(-80)
            .filter((o) => !o.ok)
            .map((o) => o.error),
        )}`,
    );
    expect(back).toBe(true);
    expect(all.filter((o) => o.error === 'HUNG')).toEqual([]);
    expect(twice).toEqual([]);
    expect(after.slice(-80).every((o) => o.ok)).toBe(true);
  });
});
