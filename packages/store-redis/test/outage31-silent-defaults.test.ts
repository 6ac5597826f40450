/**
 * outage31: what a silent Redis (SIGSTOP of a redis-server this file owns) does to a client
 * built with ioredis's defaults, against the recommended options (README, "Outages and
 * failover"). With the defaults nothing bounds a command on a silent connection: every call
 * of the silence is written to it and waits there (one command each, however long it lasts),
 * core gives up on each after `storeTimeoutMs`, and when Redis resumes it runs them all: the
 * acquisitions of callers that gave up hold their keys for a lease beyond what core gives
 * back (at most 64 at once), retries get IN_PROGRESS, though no operation runs. With the
 * recommended options the silent connection is dropped after the command timeout and later
 * calls fail at once, so the few acquisitions that were on it are all given back.
 * Nothing runs twice either way.
 */
import { randomBytes } from 'node:crypto';
import { createIdempotency, type IdemError } from '@idem/core';
import { Redis, type RedisOptions } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, recommendedRedisOptions } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  signalRedisServer,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const LEASE_MS = 3_000;

describe.skipIf(!redisBinariesAvailable())(
  'outage31: a silent Redis, default vs recommended client options',
  () => {
    let server: RedisServer;
    const clients: Redis[] = [];
    beforeAll(async () => {
      server = await startRedisServer();
    }, 30_000);
    afterAll(async () => {
      await signalRedisServer(server, 'SIGCONT').catch(() => {});
      for (const client of clients) client.disconnect();
      await stopRedisServer(server);
    });

    /** 200 executions during a 2 s silence, then each key retried once Redis answers again. */
    async function silence(options: RedisOptions) {
      const client = new Redis({ host: '127.0.0.1', port: server.port, ...options });
      clients.push(client);
      client.on('error', () => {}); // the socket timeouts of the silence are expected
      if (client.status !== 'ready') await new Promise((resolve) => client.once('ready', resolve));
      const store = createRedisStore({
        client,
        keyPrefix: `o31:${randomBytes(4).toString('hex')}:`,
      });
      const idem = createIdempotency<string>({ store, storeTimeoutMs: 200, leaseMs: LEASE_MS });
      const scope = ['t', 'POST /silent'];
      const runs = new Map<string, number>();
      const op = (key: string) => async () => {
        runs.set(key, (runs.get(key) ?? 0) + 1);
        return key;
      };
      await idem.execute({ key: 'warm', scope }, op('warm'));
      const keys: string[] = [];
      let peakQueued = 0;
      await signalRedisServer(server, 'SIGSTOP');
      try {
        for (let batch = 0; batch < 10; batch++) {
          const calls = Array.from({ length: 20 }, () => {
            const key = randomBytes(6).toString('hex');
            keys.push(key);
            return idem.execute({ key, scope }, op(key)).catch((e: unknown) => e);
          });
          for (const failure of await Promise.all(calls))
            expect((failure as IdemError).code).toBe('STORE_UNAVAILABLE');
          const queued = (client as unknown as { commandQueue: { length: number } }).commandQueue;
          peakQueued = Math.max(peakQueued, queued.length);
          await sleep(50);
        }
      } finally {
        await signalRedisServer(server, 'SIGCONT');
      }
      await sleep(1_000); // well inside the lease: Redis ran what it had been sent
      const held: string[] = [];
      for (const key of keys) {
        const answer = await idem.execute({ key, scope }, op(key)).catch((e: unknown) => e);
        if ((answer as IdemError).code === 'IN_PROGRESS') held.push(key);
        else expect((answer as { value: string }).value).toBe(key);
      }
      for (const count of runs.values()) expect(count).toBe(1);
      for (const key of held) expect(runs.has(key)).toBe(false);
      return { held: held.length, peakQueued };
    }

    it('ioredis defaults: every call of the silence waits on the socket; after it a key answers its own value or IN_PROGRESS, never a second run', async () => {
      const { held, peakQueued } = await silence({});
      console.log(
        `[outage31 redis] defaults: ${peakQueued} commands queued, ${held} of 200 keys held`,
      );
      expect(peakQueued).toBe(200);
      // How many keys stay held depends on how many give-backs core sent before Redis resumed
      // (45-136 of 200 on a quiet machine, none seen once under a loaded CI run): what is
      // asserted is what must hold either way (`silence`: no operation ran twice, a held key's
      // operation never ran, every other key answers its own value).
    }, 60_000);

    it('recommended options: the silent connection is dropped, calls fail at once, no key is left held', async () => {
      const { held, peakQueued } = await silence(
        recommendedRedisOptions({ commandTimeoutMs: 150, maxReconnectDelayMs: 100 }),
      );
      console.log(
        `[outage31 redis] recommended: ${peakQueued} commands queued, ${held} of 200 keys held`,
      );
      expect(peakQueued).toBeLessThan(64);
      expect(held).toBe(0);
    }, 60_000);
  },
);
