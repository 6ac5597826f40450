// rev32a: consumers on one amqplib channel (one a queue, a common layout) each hung a 'close'
// listener on the channel: past 10, Node warned of a leak (MaxListenersExceededWarning), on
// the application's channel. One listener per channel now, whatever the number of consumers;
// each consumer still learns its channel closed (closed answers CONSUMER_LOST).
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { consumeAmqp, type IdempotentConsumer } from '../src/index.js';
import { amqpQueues, connectAmqp, redisBed, uniqueName } from './brokers.js';

const queues = amqpQueues();
const bed = redisBed('rev32a-amqp');

describe('rev32a: many consumers on one RabbitMQ channel', () => {
  it('hang one close listener on it, no leak warning, and all end when it closes', {
    timeout: 30_000,
  }, async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => {
      warnings.push(warning);
    };
    process.on('warning', onWarning);
    const connection = await connectAmqp();
    try {
      const channel = await connection.createChannel();
      const before = channel.listenerCount('close');
      const store = createRedisStore({ client: bed.redis, keyPrefix: bed.prefix });
      const consumers: IdempotentConsumer[] = [];
      for (let i = 0; i < 15; i++) {
        const queue = uniqueName(`rev32a-shared-${i}`);
        queues.push(queue);
        await channel.assertQueue(queue, { durable: false });
        consumers.push(await consumeAmqp({ channel, queue, store, handler: async () => 'ok' }));
      }
      expect(channel.listenerCount('close') - before).toBeLessThanOrEqual(1);
      // One stopped: the others still learn the channel's close.
      await consumers[0]?.stop(1_000);
      await channel.close();
      const ends = await Promise.all(consumers.map((c) => c.closed));
      expect(ends[0]).toBeUndefined();
      for (const end of ends.slice(1)) expect(end).toMatchObject({ code: 'CONSUMER_LOST' });
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
      for (const c of consumers) await c.stop(1_000);
      // On a channel that stays open, the listener goes with the last consumer stopped.
      const other = await connection.createChannel();
      const otherBefore = other.listenerCount('close');
      const few: IdempotentConsumer[] = [];
      for (const queue of queues.slice(0, 3))
        few.push(await consumeAmqp({ channel: other, queue, store, handler: async () => 'ok' }));
      expect(other.listenerCount('close') - otherBefore).toBe(1);
      for (const c of few) await c.stop(1_000);
      expect(other.listenerCount('close')).toBe(otherBefore);
    } finally {
      process.off('warning', onWarning);
      await connection.close().catch(() => undefined);
    }
  });
});
