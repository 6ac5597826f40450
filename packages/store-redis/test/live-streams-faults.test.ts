/**
 * Review tests of the Redis live-stream channel under faults, on a redis-server of their own:
 * a blackholed (SIGSTOP) and a killed Redis. Every wait of a reader stays bounded, and the
 * XREAD loop serves readers again once Redis is back.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisLiveStreams, createRedisStore } from '../src/index.js';
import {
  type RedisServer,
  restartRedisServer,
  signalRedisServer,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';

let server: RedisServer;
const clients: Redis[] = [];
beforeAll(async () => {
  server = await startRedisServer();
}, 30_000);
afterAll(async () => {
  for (const client of clients) client.disconnect();
  await signalRedisServer(server, 'SIGCONT');
  await stopRedisServer(server);
});

const connect = () => {
  const client = new Redis({ port: server.port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
  client.on('error', () => {}); // the outages below are on purpose
  clients.push(client);
  return client;
};
const bytes = (text: string) => new TextEncoder().encode(text);

async function roundTrip(live: ReturnType<typeof createRedisLiveStreams>, storageKey: string) {
  const publisher = live.publish({
    storageKey,
    fence: 1,
    leaseMs: 10_000,
    signal: new AbortController().signal,
  });
  publisher.append({ kind: 'head', status: 200, headers: [] });
  const reader = live.open({ storageKey, fence: 1 });
  expect((await reader.next({ waitMs: 0, maxEntries: 10 })).status).toBe('entries');
  const waiting = reader.next({ waitMs: 3_000, maxEntries: 10 });
  setTimeout(() => publisher.append({ kind: 'chunk', offset: 0, bytes: bytes('x') }), 50);
  const started = performance.now();
  const read = await waiting;
  const tookMs = performance.now() - started;
  reader.close();
  await publisher.end(true);
  return { read, tookMs };
}

describe('createRedisLiveStreams under faults (own redis-server)', () => {
  it('a blackholed, then a killed Redis: reads stay bounded, and readers are woken again after', async () => {
    const client = connect();
    const live = createRedisLiveStreams({
      client,
      blockingClient: connect(),
      store: createRedisStore({ client, keyPrefix: 'f:' }),
      blockMs: 300,
      commandTimeoutMs: 500,
      endGraceMs: 500,
    });
    expect((await roundTrip(live, 'before')).read.status).toBe('entries');

    for (const fault of ['SIGSTOP', 'SIGKILL'] as const) {
      const publisher = live.publish({
        storageKey: `during-${fault}`,
        fence: 1,
        leaseMs: 10_000,
        signal: new AbortController().signal,
      });
      publisher.append({ kind: 'head', status: 200, headers: [] });
      const reader = live.open({ storageKey: `during-${fault}`, fence: 1 });
      await reader.next({ waitMs: 0, maxEntries: 10 });
      await signalRedisServer(server, fault);
      const started = performance.now();
      const read = await reader.next({ waitMs: 1_000, maxEntries: 10 });
      // waitMs, then one bounded XRANGE (commandTimeoutMs), with room for a loaded machine.
      expect(performance.now() - started).toBeLessThan(4_000);
      expect(['idle', 'missing']).toContain(read.status);
      reader.close();
      if (fault === 'SIGSTOP') await signalRedisServer(server, 'SIGCONT');
      else server = await restartRedisServer(server);
      // Back: a reader that waits is woken by the next entry, well before its 3 s wait.
      let after = await roundTrip(live, `after-${fault}`);
      for (let tries = 0; after.read.status !== 'entries' && tries < 10; tries++)
        after = await roundTrip(live, `after-${fault}-${tries}`);
      expect(after.read.status).toBe('entries');
      expect(after.tookMs).toBeLessThan(2_000);
      void publisher.end(false);
    }
  }, 40_000);
});
