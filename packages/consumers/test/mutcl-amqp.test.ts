import { setTimeout as sleep } from 'node:timers/promises';
import type { IdempotencyStore } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import { consumeAmqp, type MessageStatus } from '../src/index.js';
import { connectAmqp, uniqueName } from './brokers.js';

// mutcl (second mutation audit), on the real RabbitMQ: a message waiting in the consumer for
// the store is held no longer than a third of consumer_timeout from its delivery, as a held
// retry is (the broker closes the channel of a delivery unacked past its consumer_timeout).

it('mutcl: a message waiting out a store outage is given back within a third of consumerTimeoutMs, not after the lease', {
  timeout: 20_000,
}, async () => {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  const refusing: IdempotencyStore = new Proxy(createRedisStore({ client: redis }), {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop === 'acquire') return () => Promise.reject(new Error('ECONNREFUSED (test outage)'));
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  const connection = await connectAmqp();
  const queue = uniqueName('idem-test-mutcl-hold');
  const channel = await connection.createChannel();
  const statuses: MessageStatus[] = [];
  try {
    await channel.assertQueue(queue, { durable: false });
    const consumer = await consumeAmqp({
      store: refusing,
      channel: await connection.createChannel(),
      queue,
      prefetch: 1,
      // A hold limit of 300 ms; the lease alone would keep the message 6 s.
      consumerTimeoutMs: 900,
      leaseMs: 6_000,
      retryDelayMs: 50,
      handler: async () => 'never',
      onMessage: (r) => statuses.push(r.status),
    });
    try {
      channel.sendToQueue(queue, Buffer.from('{}'), { messageId: 'held-by-outage' });
      const deadline = performance.now() + 3_000;
      while (statuses.length === 0 && performance.now() < deadline) await sleep(25);
      expect(statuses[0]).toBe('failed');
    } finally {
      await consumer.stop(5_000);
    }
  } finally {
    await channel.deleteQueue(queue).catch(() => {});
    await connection.close();
    redis.disconnect();
  }
});
