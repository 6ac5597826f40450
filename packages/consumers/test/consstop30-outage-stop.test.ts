// consstop30: a stop() during a store outage with no final write pending took its whole
// `timeoutMs`: the engine's drain also waited for its give-backs (the release of a key whose
// acquire timed out, its handler never started), which wait for the acquire's answer and then
// send the release again for up to about two leases while the store is silent. Now stop()
// waits only for the final writes (drain `finalWritesOnly`); a give-back cut short leaves its
// key to its lease (the redelivery waits, as after a crash; the handler never runs twice).
// A final write pending is still waited for (consrev2-stop-final-write,
// consrev3-stop-write-in-flight).
import { createRedisStore } from '@idem/store-redis';
import { startPrivateRedis } from '@idem/test-ledger';
import type { ConsumeMessage } from 'amqplib';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { consumeAmqp, type MessageReport } from '../src/index.js';
import { amqpQueues, connectAmqp, uniqueName } from './brokers.js';
import { until } from './late-store.js';
import { within } from './silent-proxy.js';

const queues = amqpQueues();

describe('consstop30: RabbitMQ, stop() while the store is frozen and no final write is pending', () => {
  it('resolves without waiting out the give-back of a timed-out acquisition; the handler never ran, the message is back in the queue', {
    timeout: 60_000,
  }, async () => {
    const server = await startPrivateRedis();
    const client = new Redis(server.url, { maxRetriesPerRequest: null });
    client.on('error', () => undefined);
    const connection = await connectAmqp();
    const admin = await connection.createConfirmChannel();
    const queue = uniqueName('consstop30-outage');
    queues.push(queue);
    try {
      await admin.assertQueue(queue, { durable: false });
      const runs: string[] = [];
      const seen: string[] = [];
      let acquireErrors = 0;
      const channel = await connection.createChannel();
      const consumer = await consumeAmqp<ConsumeMessage, string>({
        channel,
        queue,
        store: createRedisStore({ client, keyPrefix: `${uniqueName('consstop30')}:` }),
        storeTimeoutMs: 300,
        leaseMs: 30_000,
        retryDelayMs: 100,
        handler: async (m) => {
          runs.push(String(m.properties.messageId));
          return 'ran';
        },
        onMessage: (r: MessageReport<ConsumeMessage>) => seen.push(r.status),
        onEvent: (e) => {
          if (e.type === 'store_error' && e.method === 'acquire') acquireErrors += 1;
        },
      });
      server.freeze();
      admin.sendToQueue(queue, Buffer.from('{}'), { messageId: uniqueName('m') });
      await admin.waitForConfirms();
      // Its acquire timed out (the engine gives it back in the background: it waits for the
      // acquire's answer, a lease and storeTimeoutMs from its send); the message waits in the
      // consumer for the store to come back.
      expect(await until(() => acquireErrors >= 1, 10_000)).toBe(true);
      // Before: 'timeout' (the drain waited for the give-back, up to the whole 25 s).
      expect(await within(consumer.stop(25_000), 10_000)).not.toBe('timeout');
      expect(seen).toEqual(['failed']);
      expect(runs).toEqual([]);
      await channel.close().catch(() => undefined);
      // Given back with requeue: in the queue again, for another instance.
      expect((await admin.checkQueue(queue)).messageCount).toBe(1);
    } finally {
      server.thaw();
      await admin.deleteQueue(queue).catch(() => undefined);
      await connection.close().catch(() => undefined);
      client.disconnect();
      await server.stop();
    }
  });
});
