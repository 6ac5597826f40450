/**
 * The recommended client options against real faults of a redis-server this test owns:
 * kill -9 with a long outage then a restart on the same port, and a silent connection
 * (SIGSTOP). Calls must stay bounded by the command timeout throughout and service must
 * resume by itself once Redis answers again.
 */
import { randomBytes } from 'node:crypto';
import { StoreUnavailableError } from '@idem/core';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore, recommendedRedisOptions } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  restartRedisServer,
  signalRedisServer,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';

// The defaults of recommendedRedisOptions().
const COMMAND_TIMEOUT = 2_000;
const MAX_RECONNECT_DELAY = 1_000;
// Room for a loaded 2-core machine (timers, process start) on top of the configured limits.
const SLACK = 1_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Attempt {
  ok: boolean;
  ms: number;
  error?: unknown;
}

// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

describe('recommended client options: bounded calls, outages end by themselves', () => {
  let server: RedisServer;
  let client: Redis;
  let store: RedisStore;

  beforeAll(async () => {
    server = await startRedisServer();
    client = new Redis({
      host: '127.0.0.1',
      port: server.port,
      ...recommendedRedisOptions(),
      lazyConnect: true,
    });
    await client.connect();
    store = createRedisStore({
      client,
      keyPrefix: `idem-test:${randomBytes(4).toString('hex')}:`,
    });
  });
  afterAll(async () => {
    client?.disconnect();
    if (server) {
      await signalRedisServer(server, 'SIGCONT');
      await stopRedisServer(server);
    }
  });

  async function attempt(): Promise<Attempt> {
    const started = performance.now();
    try {
      await store.acquire({
        key: randomBytes(8).toString('hex'),
        fingerprint: 'fp',
        owner: randomBytes(8).toString('hex'),
        leaseMs: 30_000,
        retentionMs: 60_000,
      });
      return { ok: true, ms: performance.now() - started };
    } catch (error) {
      return { ok: false, ms: performance.now() - started, error };
    }
  }

  /** Calls the store every 200 ms until `ms` passed; every call must fail, bounded. */
  async function failuresDuring(ms: number): Promise<Attempt[]> {
    const until = performance.now() + ms;
    const seen: Attempt[] = [];
    while (performance.now() < until) {
      const result = await attempt();
      seen.push(result);
      await sleep(200);
    }
    for (const result of seen) {
      expect(result.ok).toBe(false);
      expect(result.error).toBeInstanceOf(StoreUnavailableError);
      expect(result.ms, 'a call outlived the command timeout').toBeLessThan(
        COMMAND_TIMEOUT + SLACK,
      );
    }
    return seen;
  }

  /** Calls the store every 50 ms until one succeeds; returns ms since `from`. */
  async function recovery(from: number): Promise<number> {
    while (performance.now() - from < 15_000) {
      if ((await attempt()).ok) return performance.now() - from;
      await sleep(50);
    }
    throw new Error('the store did not recover within 15 s of Redis answering again');
  }

  const summary = (seen: Attempt[]) =>
    `${seen.length} calls failed, slowest ${Math.round(Math.max(...seen.map((s) => s.ms)))} ms`;

  it('kill -9, down 6.5 s, restarted on the same port: calls fail fast, then succeed again within ~1 s', async () => {
    expect((await attempt()).ok).toBe(true);
    await signalRedisServer(server, 'SIGKILL');
    const seen = await failuresDuring(6_500);
    server = await restartRedisServer(server);
    const back = performance.now();
    const recoveredMs = await recovery(back);
    expect(recoveredMs).toBeLessThan(MAX_RECONNECT_DELAY + SLACK);
    expect(client.status).toBe('ready');
    console.log(
      `[store-redis] kill -9: ${summary(seen)}; recovered ${Math.round(recoveredMs)} ms after Redis answered`,
    );
  });

  it('SIGSTOP for 5 s (a silent connection): every call ends within the timeout; service resumes after SIGCONT', async () => {
    expect((await attempt()).ok).toBe(true);
    await signalRedisServer(server, 'SIGSTOP');
    const seen = await failuresDuring(5_000);
    // At least one call was written to the silent socket and cut by the timeout.
    expect(seen.some((s) => s.ms >= COMMAND_TIMEOUT - 50)).toBe(true);
    await signalRedisServer(server, 'SIGCONT');
    const recoveredMs = await recovery(performance.now());
    expect(recoveredMs).toBeLessThan(MAX_RECONNECT_DELAY + COMMAND_TIMEOUT + SLACK);
    console.log(
      `[store-redis] SIGSTOP: ${summary(seen)}; recovered ${Math.round(recoveredMs)} ms after SIGCONT`,
    );
  });
});
