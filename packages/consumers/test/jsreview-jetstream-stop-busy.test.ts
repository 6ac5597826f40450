// Review of the rev14 JetStream stop() (drain, then give back what arrived once stopped): with
// every handler slot taken, the loop waited for a slot before reading on, so the messages
// nats.js had pulled and no handler took were given back only when a running handler ended.
// A stop() that timed out on a long handler, then a process that exits (or closes its
// connection), never gave them back: they came back only at ack_wait (30 s by default).
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import type { NatsConnection } from 'nats';
import { afterAll, describe, expect, it } from 'vitest';
import { consumeJetStream } from '../src/index.js';
import { connectNats, durableStream, uniqueName } from './brokers.js';
import { fakeMessages, message } from './fake-jetstream.js';

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
const prefix = `${uniqueName('jsreview-js-busy')}:`;
const storeOnRedis = () => createRedisStore({ client: redis, keyPrefix: prefix });
const connections: NatsConnection[] = [];
const streams: string[] = [];
afterAll(async () => {
  const [nc] = connections;
  if (nc && !nc.isClosed()) {
    const jsm = await nc.jetstreamManager();
    for (const stream of streams) await jsm.streams.delete(stream).catch(() => {});
  }
  for (const c of connections) if (!c.isClosed()) await c.close();
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

/** Waits until `done()` holds, 10 s at most (then the assertion after it fails). */
async function until(done: () => boolean): Promise<void> {
  const end = performance.now() + 10_000;
  while (!done() && performance.now() < end) await sleep(10);
}

describe('jsreview consumers: JetStream stop() with every handler slot taken', () => {
  it('what nats.js pulled and no handler took is given back once the drain ends, not when a running handler ends', async () => {
    const naks: Array<[number, number | undefined]> = [];
    let finishDrain: (() => void) | undefined;
    const { messages, push, end } = fakeMessages({
      isClosed: () => false,
      drain: () =>
        new Promise<void>((resolve) => {
          finishDrain = () => {
            end();
            resolve();
          };
        }),
    });
    for (const seq of [1, 2, 3]) push(message(seq, naks));
    let release: (() => void) | undefined;
    const handled: number[] = [];
    const consumer = await consumeJetStream({
      store: storeOnRedis(),
      consumer: { consume: async () => messages as never },
      scope: ['test', uniqueName('busy')],
      concurrency: 1,
      handler: async (m) => {
        handled.push(m.seq);
        await new Promise<void>((resolve) => {
          release = resolve;
        });
        return 1;
      },
    });
    // Polled, not a fixed sleep: under a loaded CI lane the store's acquire took over 50 ms.
    await until(() => handled.length > 0);
    expect(handled).toEqual([1]);
    const stopping = consumer.stop(5_000);
    finishDrain?.();
    await until(() => naks.length >= 2);
    // The handler of 1 still runs (released below): 2 and 3 are given back already.
    expect(naks.map(([seq]) => seq)).toEqual([2, 3]);
    expect(consumer.inFlight).toBe(1);
    release?.();
    await stopping;
    expect(handled).toEqual([1]);
  });

  it('live NATS: a stop() that times out on a long handler, then a closed connection, still gives back what was pulled (a second instance gets it at once, not at ack_wait)', {
    timeout: 40_000,
  }, async () => {
    const ncA = await connectNats();
    connections.push(ncA);
    const ncB = await connectNats();
    connections.push(ncB);
    const stream = await durableStream(ncB, 'JSREVIEW_BUSY', streams, {
      ackWaitMs: 30_000,
      count: 4,
    });
    const store = storeOnRedis();
    const seen: number[] = [];
    const n = (m: { data: Uint8Array }) =>
      (JSON.parse(Buffer.from(m.data).toString()) as { n: number }).n;
    let releaseA: (() => void) | undefined;
    const start = async (nc: NatsConnection, concurrency: number, wait: boolean) =>
      consumeJetStream({
        store,
        consumer: await nc.jetstream().consumers.get(stream, 'w'),
        concurrency,
        workingIntervalMs: 500,
        handler: async (m) => {
          seen.push(n(m));
          // A's handler: longer than stop()'s timeout.
          if (wait)
            await new Promise<void>((resolve) => {
              releaseA = resolve;
            });
          return 1;
        },
      });
    const a = await start(ncA, 1, true);
    const until = performance.now() + 10_000;
    while (performance.now() < until && seen.length === 0) await sleep(10);
    expect(seen).toEqual([1]);
    // nats.js has pulled 2 (max_messages 2 x concurrency) behind the running handler.
    await sleep(100);
    await a.stop(300);
    // The process exits now (here: closes its connection; the handler of 1 is cut off).
    await ncA.close();
    releaseA?.();
    const b = await start(ncB, 4, false);
    // 15 s at most (half of ack_wait; a loaded machine needed more than 4 s).
    const end = performance.now() + 15_000;
    while (performance.now() < end && !(seen.includes(2) && seen.includes(3) && seen.includes(4)))
      await sleep(20);
    await b.stop(2_000);
    // 1 was cut off mid-handler (stop() timed out): it comes back at ack_wait, as documented.
    // 2, 3, 4 never started: none of them waits for ack_wait (30 s; 15 s at most waited here).
    expect([...new Set(seen)].sort()).toEqual([1, 2, 3, 4]);
  });
});
