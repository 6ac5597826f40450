// Review round 10 (rev10a): what the default AMQP scope is made of, on the real RabbitMQ and
// Redis. Findings are `it.fails` (they state the correct behaviour).
import { setTimeout as sleep } from 'node:timers/promises';
import { isIdemError } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { consumeAmqp, type IdempotentConsumer } from '../src/index.js';
import { connectAmqp, uniqueName } from './brokers.js';

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
const prefix = `${uniqueName('rev10a-consumers-scope')}:`;
afterAll(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

describe('rev10a consumers: the AMQP default scope', () => {
  // FIXED (was FINDING MEDIUM): queue '' (AMQP's "the queue last declared on this channel", the usual way to consume a server-named exclusive queue) is accepted, and the default scope is then ['amqp', ''] for every such consumer: two instances' own broadcast queues share one key space, so one instance's outcome answers the other's delivery and its handler never runs.
  it("queue '': two instances' own server-named queues never answer each other's messages (or '' is refused)", async () => {
    const connection = await connectAmqp();
    const exchange = uniqueName('rev10a-bcast');
    const store = createRedisStore({ client: redis, keyPrefix: prefix });
    const consumers: IdempotentConsumer[] = [];
    const runs: string[] = [];
    const statuses: string[] = [];
    let refused = false;
    try {
      const pub = await connection.createConfirmChannel();
      await pub.assertExchange(exchange, 'fanout', { durable: false, autoDelete: true });
      try {
        for (const instance of ['a', 'b']) {
          // Each instance (a cache, a replica) declares its own exclusive queue on the fanout
          // and consumes "the queue just declared" (queue '').
          const channel = await connection.createChannel();
          const { queue } = await channel.assertQueue('', { exclusive: true });
          await channel.bindQueue(queue, exchange, '');
          consumers.push(
            await consumeAmqp({
              store,
              channel,
              queue: '',
              handler: async () => {
                runs.push(instance);
                return { instance };
              },
              onMessage: (r) => statuses.push(r.status),
            }),
          );
        }
      } catch (error) {
        refused = isIdemError(error, 'INVALID_INPUT');
      }
      if (!refused) {
        pub.publish(exchange, '', Buffer.from('{"invalidate":"user:7"}'), {
          messageId: 'bcast-1',
        });
        await pub.waitForConfirms();
        const until = performance.now() + 10_000;
        while (statuses.length < 2 && performance.now() < until) await sleep(25);
      }
      // Expected: both instances run their handler for their own copy (each copy is another
      // queue's message), or queue '' is refused with InvalidInputError. Observed: one handler run (runs ['b']),
      // the other instance's copy answered 'in_progress' (held for the first one's lease, then
      // acked as a replay of the other instance's outcome).
      expect(refused || runs.sort().join(',') === 'a,b', JSON.stringify({ runs, statuses })).toBe(
        true,
      );
    } finally {
      for (const c of consumers) await c.stop(2_000);
      await connection.close().catch(() => undefined);
    }
  });
});

describe('rev10a consumers: a scope that cannot be encoded', () => {
  // FIXED (was FINDING MEDIUM): a `scope` option that is not canonical JSON (NaN, a Map, a Date-free class instance, a function from JS) is accepted at creation; every message then fails in fingerprint/derive and is nacked WITHOUT requeue as 'rejected': a configuration mistake silently drops the whole queue (no DLX: lost).
  it('scope [billing, NaN] is refused at creation, not turned into rejecting every message', async () => {
    const connection = await connectAmqp();
    const queue = uniqueName('rev10a-bad-scope');
    const channel = await connection.createConfirmChannel();
    const statuses: string[] = [];
    let refused = false;
    let consumer: IdempotentConsumer | undefined;
    try {
      await channel.assertQueue(queue, { durable: false });
      for (const id of ['inv-1', 'inv-2'])
        channel.sendToQueue(queue, Buffer.from(`{"id":"${id}"}`), { messageId: id });
      await channel.waitForConfirms();
      try {
        consumer = await consumeAmqp({
          store: createRedisStore({ client: redis, keyPrefix: prefix }),
          channel: await connection.createChannel(),
          queue,
          scope: ['billing', Number.NaN],
          handler: async () => ({ ok: true }),
          onMessage: (r) => statuses.push(r.status),
        });
        const until = performance.now() + 10_000;
        while (statuses.length < 2 && performance.now() < until) await sleep(25);
        await consumer.stop(2_000);
      } catch (error) {
        refused = isIdemError(error);
      }
      const left = await channel.checkQueue(queue);
      // Expected: a typed error when the consumer is created (as for prefetch or
      // retryDelayMs), the two messages still in the queue. Observed: accepted; both messages
      // 'rejected' (NOT_CANONICAL), nacked without requeue: the queue is empty, the invoices
      // are gone.
      expect(refused, JSON.stringify({ statuses, left: left.messageCount })).toBe(true);
      expect(left.messageCount).toBe(2);
    } finally {
      await channel.deleteQueue(queue).catch(() => undefined);
      await connection.close().catch(() => undefined);
    }
  });

  // FIXED (was FINDING MEDIUM): `key` and `payload` options are not checked to be functions (handler is): key: 'orderId' (a field name, from JS or JSON config) makes every message throw "key is not a function" inside processing, and every message is nacked without requeue as 'rejected': the queue is silently dropped.
  it("key: 'orderId' (not a function) is refused at creation, not turned into rejecting every message", async () => {
    const connection = await connectAmqp();
    const queue = uniqueName('rev10a-bad-key');
    const channel = await connection.createConfirmChannel();
    const statuses: string[] = [];
    let refused = false;
    try {
      await channel.assertQueue(queue, { durable: false });
      channel.sendToQueue(queue, Buffer.from('{"orderId":"o-1"}'), { messageId: 'o-1' });
      await channel.waitForConfirms();
      try {
        const consumer = await consumeAmqp({
          store: createRedisStore({ client: redis, keyPrefix: prefix }),
          channel: await connection.createChannel(),
          queue,
          key: 'orderId' as unknown as () => string,
          handler: async () => ({ ok: true }),
          onMessage: (r) => statuses.push(r.status),
        });
        const until = performance.now() + 10_000;
        while (statuses.length < 1 && performance.now() < until) await sleep(25);
        await consumer.stop(2_000);
      } catch (error) {
        refused = isIdemError(error);
      }
      const left = await channel.checkQueue(queue);
      // Expected: InvalidInputError at creation, the message still queued. Observed:
      // accepted; the message 'rejected' (TypeError: key is not a function), queue empty.
      expect(refused, JSON.stringify({ statuses, left: left.messageCount })).toBe(true);
      expect(left.messageCount).toBe(1);
    } finally {
      await channel.deleteQueue(queue).catch(() => undefined);
      await connection.close().catch(() => undefined);
    }
  });
});
