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
import { latenessAround, sampleLoopLateness } from '../../../scripts/loop-lateness.js';
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
// Room for a loaded 2-core machine (timers, process start) on top of the configured limits,
// besides the event loop's lateness where it could delay the client's timers, discounted
// (scripts/loop-lateness.ts): a loaded CI lane kept the process off a core for longer.
const SLACK = 1_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Attempt {
  ok: boolean;
  ms: number;
  /** When it was called and settled (performance.now()). */
  from: number;
  to: number;
  error?: unknown;
}

// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

describe('recommended client options: bounded calls, outages end by themselves', () => {
  let server: RedisServer;
  let client: Redis;
  let store: RedisStore;

  beforeAll(async () => {
    sampleLoopLateness();
    server = await startRedisServer();
    client = new Redis({
      host: '127.0.0.1',
      port: server.port,
      ...recommendedRedisOptions(),
      lazyConnect: true,
    });
    // As the README asks: failed reconnections are reported here (else ioredis prints each).
    client.on('error', () => {});
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
      const to = performance.now();
      return { ok: true, ms: to - started, from: started, to };
    } catch (error) {
      const to = performance.now();
      return { ok: false, ms: to - started, from: started, to, error };
    }
  }

  /**
   * A span's time less the event loop's lateness that could have delayed it, its timers due
   * `due` ms after its start (see scripts/loop-lateness.ts): what the client is answerable for.
   */
  const ownMs = (from: number, to: number, due: readonly number[]) =>
    to - from - latenessAround(from, to, due);

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
      // A call cut by the command timeout, due 2 s after its send.
      expect(
        ownMs(result.from, result.to, [COMMAND_TIMEOUT]),
        'a call outlived the command timeout',
      ).toBeLessThan(COMMAND_TIMEOUT + SLACK);
    }
    return seen;
  }

  /**
   * Calls the store every 50 ms until one succeeds; returns ms since `from`, in all and less
   * the loop's lateness that could have delayed the client's timers due `due` ms after `from`
   * (a reconnection's delay, a command timeout) or the answer.
   */
  async function recovery(
    from: number,
    due: readonly number[],
  ): Promise<{ ms: number; ownMs: number }> {
    while (performance.now() - from < 15_000) {
      if ((await attempt()).ok) {
        const to = performance.now();
        return { ms: to - from, ownMs: ownMs(from, to, due) };
      }
      await sleep(50);
    }
    throw new Error('the store did not recover within 15 s of Redis answering again');
  }

  const summary = (seen: Attempt[]) =>
    `${seen.length} calls failed, slowest ${Math.round(Math.max(...seen.map((s) => s.ms)))} ms (${Math.round(Math.max(...seen.map((s) => ownMs(s.from, s.to, [COMMAND_TIMEOUT]))))} ms without the loop's lateness)`;

  it('kill -9, down 6.5 s, restarted on the same port: calls fail fast, then succeed again within ~1 s', async () => {
    expect((await attempt()).ok).toBe(true);
    await signalRedisServer(server, 'SIGKILL');
    const seen = await failuresDuring(6_500);
    server = await restartRedisServer(server);
    const back = performance.now();
    // The next reconnection is due within the longest delay.
    const recovered = await recovery(back, [MAX_RECONNECT_DELAY]);
    expect(recovered.ownMs).toBeLessThan(MAX_RECONNECT_DELAY + SLACK);
    expect(client.status).toBe('ready');
    console.log(
      `[store-redis] kill -9: ${summary(seen)}; recovered ${Math.round(recovered.ms)} ms after Redis answered (${Math.round(recovered.ownMs)} ms without the loop's lateness)`,
    );
  });

  it('SIGSTOP for 5 s (a silent connection): every call ends within the timeout; service resumes after SIGCONT', async () => {
    expect((await attempt()).ok).toBe(true);
    await signalRedisServer(server, 'SIGSTOP');
    const seen = await failuresDuring(5_000);
    // At least one call was written to the silent socket and cut by the timeout.
    expect(seen.some((s) => s.ms >= COMMAND_TIMEOUT - 50)).toBe(true);
    await signalRedisServer(server, 'SIGCONT');
    // A connection attempt on the stopped server cut by the timeout, then the next one due
    // within the longest delay.
    const recovered = await recovery(performance.now(), [
      COMMAND_TIMEOUT,
      MAX_RECONNECT_DELAY + COMMAND_TIMEOUT,
    ]);
    expect(recovered.ownMs).toBeLessThan(MAX_RECONNECT_DELAY + COMMAND_TIMEOUT + SLACK);
    console.log(
      `[store-redis] SIGSTOP: ${summary(seen)}; recovered ${Math.round(recovered.ms)} ms after SIGCONT (${Math.round(recovered.ownMs)} ms without the loop's lateness)`,
    );
  });
});
