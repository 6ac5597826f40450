// amqp32: attacks on the RabbitMQ consumer's own reconnection (`openChannel`): a broker that
// refuses connections for a while, a link that keeps failing (a reconnect storm), an
// `openChannel` that throws, answers garbage or hangs, and stop() during the wait and during a
// hanging attempt. Bounded in time, no channel left open, 'lost' and 'resumed' told in turn.
// On the real RabbitMQ (through a proxy of the test's own) and Redis.
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { type ConsumerStatus, consumeAmqp } from '../src/index.js';
import { type Channel, reconnectBench } from './amqp32-proxy.js';
import { amqpQueues, redisBed } from './brokers.js';
import { until } from './late-store.js';
import { within } from './silent-proxy.js';

const queues = amqpQueues();
const bed = redisBed('amqp32-faults');
const store = () => createRedisStore({ client: bed.redis, keyPrefix: bed.prefix });

/** 'lost' and 'resumed' strictly in turn, starting with 'lost'. */
const inTurn = (statuses: ConsumerStatus[]) =>
  statuses.every((s, i) => s.type === (i % 2 === 0 ? 'lost' : 'resumed'));

describe('amqp32: the reconnection under attack', () => {
  it('a broker that refuses connections for a while: tried again at growing intervals, then resumed', {
    timeout: 30_000,
  }, async () => {
    const bench = await reconnectBench(queues, 'amqp32-refuse');
    const { proxy, opener } = bench;
    const { consumer, runs, types } = await bench.start(store(), {
      reconnectDelayMs: 50,
      reconnectMaxDelayMs: 400,
    });
    try {
      proxy.settings.refuse = true;
      proxy.cut();
      expect(await until(() => opener.log.calls >= 5, 10_000)).toBe(true);
      expect(types()).toEqual(['lost']);
      bench.publish('during');
      proxy.settings.refuse = false;
      expect(await until(() => runs.length === 1, 10_000)).toBe(true);
      expect(types()).toEqual(['lost', 'resumed']);
      // Only the attempt that worked made a channel; the failed ones made none.
      expect(opener.log.channels).toHaveLength(2);
    } finally {
      await consumer.stop(5_000);
    }
    expect(opener.openChannels()).toEqual([]);
    await bench.close();
  });

  it('a reconnect storm (each connection cut soon after it opens): the waits grow, not one attempt per reconnectDelayMs; it recovers once the link holds', {
    timeout: 40_000,
  }, async () => {
    const bench = await reconnectBench(queues, 'amqp32-storm');
    const { proxy, opener } = bench;
    const { consumer, runs, statuses } = await bench.start(store(), {
      reconnectDelayMs: 50,
      reconnectMaxDelayMs: 1_000,
    });
    try {
      proxy.settings.stormMs = 150;
      proxy.cut();
      const before = opener.log.calls;
      await new Promise((resolve) => setTimeout(resolve, 4_000));
      const during = opener.log.calls - before;
      // Reopened at once after each short-lived channel, it would be about 4 s / 200 ms = 20
      // attempts; the waits doubling to 1 s make it about 7 (fewer on a slow machine).
      expect(during).toBeGreaterThanOrEqual(2);
      expect(during).toBeLessThanOrEqual(10);
      expect(inTurn(statuses)).toBe(true);
      proxy.settings.stormMs = 0;
      expect(await until(() => statuses.at(-1)?.type === 'resumed', 10_000)).toBe(true);
      bench.publish('after-storm');
      expect(await until(() => runs.length === 1, 10_000)).toBe(true);
      expect(opener.openChannels()).toHaveLength(1);
    } finally {
      await consumer.stop(5_000);
    }
    expect(inTurn(statuses)).toBe(true);
    expect(opener.openChannels()).toEqual([]);
    await bench.close();
  });

  it('openChannel that throws, rejects or answers no channel: tried again; at start a failure or a hang rejects consumeAmqp', {
    timeout: 30_000,
  }, async () => {
    const bench = await reconnectBench(queues, 'amqp32-throws');
    const { publisher, queue, opener } = bench;
    let calls = 0;
    const faults = [
      () => {
        throw new Error('sync throw');
      },
      () => Promise.reject(new Error('rejected')),
      () => Promise.resolve({ not: 'a channel' }),
      () => Promise.resolve(undefined),
    ];
    const { consumer, runs, types } = await bench.start(store(), {
      openChannel: (() => {
        calls += 1;
        const fault = calls >= 2 ? faults[calls - 2] : undefined;
        return fault ? fault() : opener.open();
      }) as () => Promise<Channel>,
      reconnectDelayMs: 50,
      reconnectMaxDelayMs: 200,
    });
    try {
      bench.proxy.cut();
      expect(await until(() => types().length === 2, 10_000)).toBe(true);
      expect(types()).toEqual(['lost', 'resumed']);
      expect(calls).toBe(2 + faults.length);
      bench.publish('ok');
      expect(await until(() => runs.length === 1, 10_000)).toBe(true);
    } finally {
      await consumer.stop(5_000);
    }
    expect(opener.openChannels()).toEqual([]);
    const base = { queue, store: store(), handler: async () => 'ok' };
    // At start a failure is the caller's to see (wrong URL, credentials, queue).
    await expect(
      consumeAmqp({ ...base, openChannel: () => Promise.reject(new Error('no broker')) }),
    ).rejects.toThrow('no broker');
    // A first openChannel that hangs is given up at openChannelTimeoutMs (consumeAmqp does not
    // hang), and the channel it answers late is closed.
    let answerFirst: () => void = () => {};
    const starting = consumeAmqp({
      ...base,
      openChannel: () =>
        new Promise<Channel>((resolve) => {
          answerFirst = () => void opener.open().then(resolve);
        }),
      openChannelTimeoutMs: 300,
    });
    await expect(within(starting, 5_000)).rejects.toThrow('openChannelTimeoutMs');
    const madeBefore = opener.log.channels.length;
    answerFirst();
    expect(await until(() => opener.log.channels.length === madeBefore + 1, 5_000)).toBe(true);
    expect(await until(() => opener.openChannels().length === 0, 5_000)).toBe(true);
    const refused = [
      { channel: publisher, openChannel: opener.open },
      { channel: publisher, reconnectDelayMs: 10 },
      { openChannel: opener.open, reconnectDelayMs: 500, reconnectMaxDelayMs: 100 },
      ...[0, -1, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 31].map((bad) => ({
        openChannel: opener.open,
        openChannelTimeoutMs: bad,
      })),
    ];
    for (const options of refused)
      await expect(consumeAmqp({ ...base, ...options })).rejects.toMatchObject({
        code: 'INVALID_INPUT',
      });
    expect(opener.openChannels()).toEqual([]);
    await bench.close();
  });

  it('stop() during the wait to reconnect ends it at once; closed answers undefined', {
    timeout: 20_000,
  }, async () => {
    const bench = await reconnectBench(queues, 'amqp32-stopwait');
    const { consumer, types } = await bench.start(store(), {
      reconnectDelayMs: 600_000,
      reconnectMaxDelayMs: 600_000,
    });
    bench.proxy.cut();
    expect(await until(() => types().length === 1, 5_000)).toBe(true);
    // The 10-minute wait is ended by stop(). Bounded by the test, not timed.
    expect(await within(consumer.stop(5_000), 5_000)).toBeUndefined();
    expect(await within(consumer.closed, 1_000)).toBeUndefined();
    expect(bench.opener.log.calls).toBe(1);
    expect(types()).toEqual(['lost']);
    await bench.close();
  });

  it('an openChannel that hangs: each attempt is given up at openChannelTimeoutMs, stop() returns at once, and channels answered late are closed', {
    timeout: 30_000,
  }, async () => {
    const bench = await reconnectBench(queues, 'amqp32-hang');
    const { opener } = bench;
    const hung: Array<() => void> = [];
    const late: Channel[] = [];
    let calls = 0;
    const { consumer, types } = await bench.start(store(), {
      openChannel: () => {
        calls += 1;
        if (calls === 1) return opener.open();
        // Hangs until the test lets it answer a real channel.
        return new Promise<Channel>((resolve) => {
          hung.push(() =>
            opener.open().then((channel) => {
              late.push(channel);
              resolve(channel);
            }),
          );
        });
      },
      reconnectDelayMs: 50,
      reconnectMaxDelayMs: 100,
      openChannelTimeoutMs: 200,
    });
    bench.proxy.cut();
    // Given up one after another, not one attempt hung for ever.
    expect(await until(() => hung.length >= 3, 10_000)).toBe(true);
    expect(await within(consumer.stop(10_000), 5_000)).toBeUndefined();
    expect(types()).toEqual(['lost']);
    const attempts = hung.length;
    for (const answer of hung) answer();
    expect(await until(() => late.length === attempts, 10_000)).toBe(true);
    // Every channel answered after its attempt was given up (or after stop) is closed.
    expect(await until(() => opener.openChannels().length === 0, 5_000)).toBe(true);
    expect(hung.length).toBe(attempts); // nothing tried after stop()
    await bench.close();
  });
});
