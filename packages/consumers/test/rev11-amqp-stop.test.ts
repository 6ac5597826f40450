import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { consumeAmqp } from '../src/index.js';
import { amqpQueues, connectAmqp, redisBed, uniqueName } from './brokers.js';

// rev11: consumeAmqp's stop() (bounded cancel, held messages given back at once, in-flight
// waited for). On the real RabbitMQ and Redis.

const { redis, prefix } = redisBed('rev11-consumers-amqp');
const queues = amqpQueues();

describe('rev11 amqp stop()', () => {
  it('waits for a running handler, gives a held message back at once, acks nothing unrecorded', async () => {
    const connection = await connectAmqp();
    try {
      const channel = await connection.createChannel();
      const queue = uniqueName('rev11-stop');
      queues.push(queue);
      await channel.assertQueue(queue, { durable: false });
      const runs: Record<string, number> = {};
      let slowDone = 0;
      const consumer = await consumeAmqp({
        channel,
        queue,
        prefetch: 5,
        store: createRedisStore({ client: redis, keyPrefix: prefix }),
        retryDelayMs: 20_000,
        handler: async (message) => {
          const id = message.properties.messageId as string;
          runs[id] = (runs[id] ?? 0) + 1;
          if (id === 'fails') throw new Error('transient');
          await sleep(800);
          slowDone = performance.now();
          return 'ok';
        },
      });
      channel.sendToQueue(queue, Buffer.from('a'), { messageId: 'fails' });
      channel.sendToQueue(queue, Buffer.from('b'), { messageId: 'slow' });
      const deadline = Date.now() + 5_000;
      while (Date.now() < deadline && !(runs.fails && runs.slow)) await sleep(20);
      await sleep(50);
      const started = performance.now();
      await consumer.stop(5_000);
      const stoppedAt = performance.now();
      // Not before the running handler ended, and not after the held message's delay.
      expect(slowDone).toBeGreaterThan(0);
      expect(stoppedAt).toBeGreaterThanOrEqual(slowDone);
      expect(stoppedAt - started).toBeLessThan(3_000);
      expect(consumer.inFlight).toBe(0);
      // What is left on the queue: only the failed one, given back (requeued).
      await channel.close();
      const check = await connection.createChannel();
      const left: string[] = [];
      for (let i = 0; i < 5; i++) {
        const got = await check.get(queue, { noAck: true });
        if (!got) break;
        left.push(got.properties.messageId as string);
      }
      expect(left).toEqual(['fails']);
      expect(runs).toEqual({ fails: 1, slow: 1 });
    } finally {
      await connection.close().catch(() => undefined);
    }
  });

  it('stop(timeoutMs) values out of range are refused, 0 and Infinity taken', async () => {
    const connection = await connectAmqp();
    try {
      const channel = await connection.createChannel();
      const queue = uniqueName('rev11-stop-args');
      queues.push(queue);
      await channel.assertQueue(queue, { durable: false });
      const consumer = await consumeAmqp({
        channel,
        queue,
        store: createRedisStore({ client: redis, keyPrefix: prefix }),
        handler: async () => 'ok',
      });
      for (const bad of [-1, Number.NaN, 2 ** 31, '5' as unknown as number])
        await expect(consumer.stop(bad)).rejects.toThrow(/stop\(timeoutMs\)/);
      await consumer.stop(0);
      await consumer.stop(Number.POSITIVE_INFINITY);
    } finally {
      await connection.close().catch(() => undefined);
    }
  });
});
