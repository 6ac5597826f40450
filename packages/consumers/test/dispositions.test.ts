import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { consumeAmqp, type MessageStatus } from '../src/index.js';
import { connectAmqp, uniqueName } from './brokers.js';

// What each kind of message is told, on the real broker: a publisher's duplicate is acked
// as a replay, another body under a recorded key and a message without a key are rejected
// (not requeued), a failing handler's message is requeued and runs again.
describe('RabbitMQ dispositions', () => {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  const prefix = `${uniqueName('idem-consumers-disp')}:`;
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  it('replay, mismatch, no key, failure then success', async () => {
    const connection = await connectAmqp();
    const queue = uniqueName('idem-test-disp');
    const channel = await connection.createConfirmChannel();
    try {
      await channel.assertQueue(queue, { durable: false });
      const seen: { id: string; status: MessageStatus; code?: string }[] = [];
      const runs = new Map<string, number>();
      const consumer = await consumeAmqp({
        store: createRedisStore({ client: redis, keyPrefix: prefix }),
        channel: await connection.createChannel(),
        queue,
        prefetch: 1, // one at a time: the statuses come in publishing order
        retryDelayMs: 100,
        handler: async (message) => {
          const id = String(message.properties.messageId);
          const n = (runs.get(id) ?? 0) + 1;
          runs.set(id, n);
          if (id === 'flaky' && n === 1) throw new Error('downstream timeout');
          return { ok: id };
        },
        onMessage: (r) =>
          seen.push({
            id: String(r.message.properties.messageId),
            status: r.status,
            code: (r.error as { code?: string } | undefined)?.code,
          }),
      });
      const send = (body: string, messageId?: string) =>
        channel.sendToQueue(queue, Buffer.from(body), messageId ? { messageId } : {});
      send('{"amount":1}', 'order-1');
      send('{"amount":1}', 'order-1'); // the publisher's retry
      send('{"amount":2}', 'order-1'); // another body under the same key
      send('{"amount":3}'); // no messageId
      send('{"amount":4}', 'flaky');
      await channel.waitForConfirms();
      const deadline = performance.now() + 15_000;
      while (seen.length < 6 && performance.now() < deadline) await sleep(25);
      await consumer.stop(5_000);
      expect(seen).toEqual([
        { id: 'order-1', status: 'processed', code: undefined },
        { id: 'order-1', status: 'replayed', code: undefined },
        { id: 'order-1', status: 'rejected', code: 'MISMATCH' },
        { id: 'undefined', status: 'rejected', code: undefined },
        { id: 'flaky', status: 'failed', code: undefined },
        { id: 'flaky', status: 'processed', code: undefined },
      ]);
      expect(Object.fromEntries(runs)).toEqual({ 'order-1': 1, flaky: 2 });
      // Every message acked or rejected: nothing left, nothing unacked.
      expect((await channel.checkQueue(queue)).messageCount).toBe(0);
    } finally {
      await channel.deleteQueue(queue).catch(() => {});
      await connection.close().catch(() => {});
    }
  });
});
