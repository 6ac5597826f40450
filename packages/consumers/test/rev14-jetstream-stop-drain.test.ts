// consumeJetStream's stop() (rev14): the paths the live NATS test cannot reach, on a fake pull
// consumer shaped like nats.js 2.x's: a `messages` without the inbox subscription, a drain that
// fails, a broker that never answers the drain's PING, and messages that arrive once stopped.
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { consumeJetStream } from '../src/index.js';
import { uniqueName } from './brokers.js';
import { fakeMessages, message } from './fake-jetstream.js';

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
const prefix = `${uniqueName('rev14-js-drain')}:`;
const storeOnRedis = () => createRedisStore({ client: redis, keyPrefix: prefix });
afterAll(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

async function start(messages: object) {
  return consumeJetStream({
    store: storeOnRedis(),
    consumer: { consume: async () => messages as never },
    scope: ['test'],
    handler: async () => 1,
  });
}

describe('rev14 consumers: JetStream stop() drains the pull before giving back', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('without the inbox subscription (another client), stop() stops the pull as before', async () => {
    const { messages, calls } = fakeMessages(undefined);
    const consumer = await start(messages);
    await consumer.stop(1_000);
    expect(calls.stop).toBe(1);
  });

  it('a drain that throws or rejects stops the pull at once', async () => {
    for (const drain of [
      () => {
        throw new Error('closed');
      },
      () => Promise.reject(new Error('connection closed')),
    ]) {
      const { messages, calls } = fakeMessages({ drain, isClosed: () => false });
      const consumer = await start(messages);
      await consumer.stop(1_000);
      expect(calls.stop).toBeGreaterThanOrEqual(1);
    }
  });

  it('a closed subscription is not drained', async () => {
    const drain = vi.fn(async () => {});
    const { messages, calls } = fakeMessages({ drain, isClosed: () => true });
    const consumer = await start(messages);
    await consumer.stop(1_000);
    expect(drain).not.toHaveBeenCalled();
    expect(calls.stop).toBe(1);
  });

  it('what arrives while the drain runs is given back (nak, 250 ms delay) once the iteration ends, never handled', async () => {
    const naks: Array<[number, number | undefined]> = [];
    let finishDrain: (() => void) | undefined;
    const sub = {
      isClosed: () => false,
      drain: () =>
        new Promise<void>((resolve) => {
          finishDrain = resolve;
        }),
    };
    const handled: number[] = [];
    const { messages, calls, push } = fakeMessages(sub);
    const consumer = await consumeJetStream({
      store: storeOnRedis(),
      consumer: { consume: async () => messages as never },
      scope: ['test'],
      handler: async (m) => {
        handled.push(m.seq);
        return 1;
      },
    });
    push(message(1, naks));
    await sleep(50);
    const stopping = consumer.stop(2_000);
    push(message(2, naks));
    push(message(3, naks));
    await sleep(50);
    // The drain has not ended: nothing given back yet (a nak now could go to this pull).
    expect(naks).toEqual([]);
    expect(calls.stop).toBe(0);
    finishDrain?.();
    await stopping;
    expect(handled).toEqual([1]);
    expect(naks).toEqual([
      [2, 250],
      [3, 250],
    ]);
    expect(calls.stop).toBe(1);
  });

  it('a broker that never answers the drain: the pull is stopped after 5 s, and stop() is bounded by its timeout', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] });
    const sub = { isClosed: () => false, drain: () => new Promise<void>(() => {}) };
    const { messages, calls } = fakeMessages(sub);
    const consumer = await start(messages);
    let settled = false;
    const stopping = consumer.stop(Number.POSITIVE_INFINITY).finally(() => {
      settled = true;
    });
    await vi.advanceTimersByTimeAsync(4_900);
    expect(settled).toBe(false);
    expect(calls.stop).toBe(0);
    await vi.advanceTimersByTimeAsync(200);
    expect(calls.stop).toBe(1);
    await stopping;
    expect(settled).toBe(true);
  });

  // conslate2: stop(timeoutMs) shorter than the drain ends the pull at its deadline (it used to
  // leave it draining, up to 5 s, and what waited for the drain's end to be given back was never
  // naked by a process that exited meanwhile: test/conslate2-jetstream-stop.test.ts).
  it('a broker that never answers the drain: stop(1_000) ends the pull at its deadline', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] });
    const sub = { isClosed: () => false, drain: () => new Promise<void>(() => {}) };
    const { messages, calls } = fakeMessages(sub);
    const consumer = await start(messages);
    let settled = false;
    const stopping = consumer.stop(1_000).finally(() => {
      settled = true;
    });
    await vi.advanceTimersByTimeAsync(900);
    expect([settled, calls.stop]).toEqual([false, 0]);
    await vi.advanceTimersByTimeAsync(200);
    expect(settled).toBe(true);
    await stopping.catch(() => {});
    expect(calls.stop).toBe(1);
  });
});
