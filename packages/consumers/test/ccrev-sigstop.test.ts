// ccrev (held): a Redis frozen (SIGSTOP, by PID) in the middle of a flow of messages on
// RabbitMQ with two consumers side by side: every message runs once, none is left (a handler
// whose final write met the freeze is answered as a replay on its redelivery).
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore, recommendedRedisOptions } from '@idem/store-redis';
import { startPrivateRedis } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { consumeAmqp } from '../src/index.js';
import { connectAmqp, uniqueName } from './brokers.js';

describe('ccrev consumers: a frozen store', () => {
  it('RabbitMQ, two consumers, Redis SIGSTOPped 3 s mid-flow: each message runs once, none left', async () => {
    const server = await startPrivateRedis();
    const client = new Redis(server.url, recommendedRedisOptions({ commandTimeoutMs: 250 }));
    client.on('error', () => {});
    const connection = await connectAmqp();
    const queue = uniqueName('ccrev-sigstop');
    const admin = await connection.createConfirmChannel();
    try {
      await admin.assertQueue(queue, { durable: false });
      const runs = new Map<string, number>();
      const options = {
        store: createRedisStore({ client, keyPrefix: `${uniqueName('ccrev-sigstop')}:` }),
        queue,
        storeTimeoutMs: 300,
        retryDelayMs: 100,
        leaseMs: 2_000,
        handler: async (m: { properties: { messageId?: string } }) => {
          const id = String(m.properties.messageId);
          runs.set(id, (runs.get(id) ?? 0) + 1);
          await sleep(20);
          return id;
        },
      };
      const consumers = [
        await consumeAmqp({ ...options, channel: await connection.createChannel() }),
        await consumeAmqp({ ...options, channel: await connection.createChannel() }),
      ];
      const N = 60;
      for (let i = 0; i < N; i++) {
        admin.sendToQueue(queue, Buffer.from(`{"n":${i}}`), { messageId: `m-${i}` });
        if (i === 20) {
          await admin.waitForConfirms();
          server.freeze();
          setTimeout(() => server.thaw(), 3_000);
        }
      }
      await admin.waitForConfirms();
      const deadline = performance.now() + 30_000;
      while (
        performance.now() < deadline &&
        !(runs.size === N && (await admin.checkQueue(queue)).messageCount === 0)
      )
        await sleep(100);
      for (const c of consumers) await c.stop(5_000);
      expect(runs.size).toBe(N);
      expect([...runs.values()].filter((n) => n !== 1)).toEqual([]);
      expect((await admin.checkQueue(queue)).messageCount).toBe(0);
    } finally {
      server.thaw();
      await admin.deleteQueue(queue).catch(() => {});
      await connection.close().catch(() => {});
      client.disconnect();
      await server.stop();
    }
  });
});
