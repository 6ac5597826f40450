// rev32e: a message of a channel of the consumer's own that is lost while it waits for the
// store (a store outage met together with the broker connection: a network blip on the app's
// host) is given back at the loss, not kept waiting for the store to run its handler for a copy
// whose ack can never be sent. Before, that copy waited on (up to max(leaseMs, retryDelayMs)),
// and once the store came back it could take the key first: the handler ran for it, its ack was
// lost with the old channel, and the broker's redelivery met the key in progress and was held a
// whole lease before being acked as a replay. On the real RabbitMQ (through a proxy of the
// test's own that cuts the connection) and Redis.
import type { IdempotencyStore } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import type { MessageStatus } from '../src/index.js';
import { reconnectBench } from './amqp32-proxy.js';
import { amqpQueues, redisBed } from './brokers.js';
import { until } from './late-store.js';

const queues = amqpQueues();
const bed = redisBed('rev32e-outage');

/** The Redis store, its acquisitions refused while `out` says so (a store outage). */
function outageStore(out: () => boolean): { store: IdempotencyStore; acquires: () => number } {
  const inner = createRedisStore({ client: bed.redis, keyPrefix: bed.prefix });
  let acquires = 0;
  const store = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop === 'acquire')
        return (...args: unknown[]) => {
          acquires += 1;
          if (out()) return Promise.reject(new Error('ECONNREFUSED (rev32e outage)'));
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { store, acquires: () => acquires };
}

describe('rev32e: a message of a lost channel is not kept waiting for the store', () => {
  it('connection cut while a message waits out a store outage: that copy is given back at once; the redelivery runs the handler once and is acked', {
    timeout: 30_000,
  }, async () => {
    const bench = await reconnectBench(queues, 'rev32e-outage');
    const { proxy } = bench;
    let out = true;
    const { store, acquires } = outageStore(() => out);
    const reports: Array<{ id: string; status: MessageStatus; redelivered: boolean }> = [];
    const { consumer, runs, types } = await bench.start(store, {
      reconnectDelayMs: 100,
      reconnectMaxDelayMs: 400,
      prefetch: 1,
      // The outage wait would keep the first copy up to 20 s (max(leaseMs, retryDelayMs)).
      leaseMs: 20_000,
      retryDelayMs: 100,
      onMessage: ({ message, status }) =>
        reports.push({
          id: message.properties.messageId,
          status,
          redelivered: message.fields.redelivered,
        }),
    });
    try {
      bench.publish('blip');
      // The first copy waits in the consumer for the store.
      expect(await until(() => acquires() >= 2, 5_000)).toBe(true);
      expect(reports).toEqual([]);
      proxy.cut();
      // Its channel gone, that copy is given back (it can never be acked) while the store is
      // still out; the broker's redelivery on the new channel waits for the store in its place.
      expect(
        await until(() => reports.some((r) => !r.redelivered && r.status === 'failed'), 5_000),
      ).toBe(true);
      expect(await until(() => types().length === 2, 5_000)).toBe(true);
      expect(types()).toEqual(['lost', 'resumed']);
      out = false;
      expect(await until(() => runs.length === 1 && reports.length === 2, 10_000)).toBe(true);
      // The handler ran once, for the copy that could be acked; nothing was held as in progress.
      expect(runs).toEqual(['blip']);
      expect(reports.map((r) => [r.redelivered, r.status])).toEqual([
        [false, 'failed'],
        [true, 'processed'],
      ]);
    } finally {
      await consumer.stop(5_000);
    }
    // Acked on the channel it came on: nothing left in the queue, nothing unacked.
    expect((await bench.publisher.checkQueue(bench.queue)).messageCount).toBe(0);
    await bench.close();
  });
});
