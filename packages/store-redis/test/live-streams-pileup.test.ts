/**
 * Readers of the Redis live-stream channel while Redis is blackholed (SIGSTOP of a
 * redis-server of its own): every wait stays bounded in time, the commands the channel leaves
 * outstanding on its two connections stay bounded in number whatever the readers do, and
 * everything recovers by itself once Redis answers again.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisLiveStreams, createRedisStore } from '../src/index.js';
import {
  type RedisServer,
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
  client.on('error', () => {});
  clients.push(client);
  return client;
};
/** Commands sent and not answered, plus those queued to be sent (ioredis internals). */
const outstanding = (client: Redis) => {
  const internal = client as unknown as {
    commandQueue: { length: number };
    offlineQueue: { length: number };
  };
  return internal.commandQueue.length + internal.offlineQueue.length;
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('createRedisLiveStreams with Redis blackholed (own redis-server)', () => {
  it('bounds every wait and the outstanding commands of many readers, and recovers by itself', async () => {
    const client = connect();
    const blockingClient = connect();
    const live = createRedisLiveStreams({
      client,
      blockingClient,
      store: createRedisStore({ client, keyPrefix: 'p:' }),
      blockMs: 200,
      commandTimeoutMs: 300,
      endGraceMs: 500,
    });
    const publisher = live.publish({
      storageKey: 'k',
      fence: 1,
      leaseMs: 30_000,
      signal: new AbortController().signal,
    });
    publisher.append({ kind: 'head', status: 200, headers: [] });
    // The head landed (a write lost to the blackhole would give the generation up).
    const probe = live.open({ storageKey: 'k', fence: 1 });
    for (let i = 0; i < 100; i++) {
      if ((await probe.next({ waitMs: 0, maxEntries: 1 })).status === 'entries') break;
      await sleep(20);
    }
    probe.close();
    await signalRedisServer(server, 'SIGSTOP');
    // 25 readers, each opening and reading again and again for 3 s (clients retrying).
    const blackholeMs = 3_000;
    const stopAt = performance.now() + blackholeMs;
    let reads = 0;
    let longest = 0;
    let peakClient = 0;
    let peakBlocking = 0;
    let atOneSecond = 0;
    setTimeout(() => {
      atOneSecond = outstanding(client);
    }, 1_000);
    const sampler = setInterval(() => {
      peakClient = Math.max(peakClient, outstanding(client));
      peakBlocking = Math.max(peakBlocking, outstanding(blockingClient));
    }, 10);
    await Promise.all(
      Array.from({ length: 25 }, async () => {
        while (performance.now() < stopAt) {
          const reader = live.open({ storageKey: 'k', fence: 1 });
          const started = performance.now();
          await reader.next({ waitMs: 250, maxEntries: 10 });
          await reader.next({ waitMs: 250, maxEntries: 10 });
          longest = Math.max(longest, performance.now() - started);
          reads += 2;
          reader.close();
          // The next request of a retrying client.
          await sleep(20);
        }
      }),
    );
    clearInterval(sampler);
    // Two reads of waitMs 250 with their bounded range calls (300 ms each), on a loaded machine.
    expect(longest).toBeLessThan(2_500);
    expect(reads).toBeGreaterThan(50);
    // Bounded in number, not growing with the reads or the time: what was in flight when Redis
    // went silent (each of the 25 readers' XRANGE + EXISTS) and at most 4 probes (2 commands
    // each) after. Before the gate: one pair per read, 500 after 3 s.
    expect(peakClient).toBeLessThanOrEqual(2 * 25 + 2 * 4 + 4);
    expect(peakClient).toBeLessThanOrEqual(atOneSecond + 2 * 4);
    // The XREAD loop: one XREAD and one CLIENT ID queued behind it.
    expect(peakBlocking).toBeLessThanOrEqual(3);
    console.log(
      `blackhole ${blackholeMs} ms: ${reads} reads, longest ${Math.round(longest)} ms, outstanding peak client ${peakClient} (${atOneSecond} at 1 s), blocking ${peakBlocking}`,
    );

    await signalRedisServer(server, 'SIGCONT');
    // Back: the queues drain and a waiting reader is woken by the next entry. Each try
    // publishes a generation of its own: a write that missed its 300 ms limit on a loaded
    // machine gives its generation up (by design: a gap is never published), which must not
    // decide the tries after it (the first version kept one publisher, and a CI lane's single
    // slow XADD left every later try waiting on a generation given up, then expired).
    const recovered = performance.now();
    let woken = false;
    let tries = 0;
    for (; tries < 20 && !woken; tries++) {
      const generation = { storageKey: 'k', fence: 2 + tries };
      const fresh = live.publish({
        ...generation,
        leaseMs: 30_000,
        signal: new AbortController().signal,
      });
      fresh.append({ kind: 'head', status: 200, headers: [] });
      const reader = live.open(generation);
      let first = await reader.next({ waitMs: 0, maxEntries: 100 });
      for (let i = 0; i < 10 && first.status !== 'entries'; i++) {
        await sleep(50);
        first = await reader.next({ waitMs: 0, maxEntries: 100 });
      }
      if (first.status === 'entries') {
        const waiting = reader.next({ waitMs: 3_000, maxEntries: 10 });
        const at = performance.now();
        setTimeout(
          () => fresh.append({ kind: 'chunk', offset: 0, bytes: new Uint8Array([1]) }),
          50,
        );
        const read = await waiting;
        woken = read.status === 'entries' && performance.now() - at < 2_000;
      }
      reader.close();
      await fresh.end(woken);
      if (!woken) await sleep(100);
    }
    console.log(
      `recovered after SIGCONT in ${Math.round(performance.now() - recovered)} ms, ${tries} tries`,
    );
    expect(woken).toBe(true);
    expect(performance.now() - recovered).toBeLessThan(10_000);
    for (let i = 0; i < 50 && outstanding(client) + outstanding(blockingClient) > 1; i++)
      await sleep(50);
    expect(outstanding(client)).toBe(0);
    expect(outstanding(blockingClient)).toBeLessThanOrEqual(1);
    await publisher.end(true);
    expect(live.stats().readers).toBe(0);
  }, 40_000);
});
