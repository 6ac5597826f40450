import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { createFencedLedger, REDIS_URL, startPrivateRedis } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { consumeAmqp, type MessageStatus } from '../src/index.js';
import { connectAmqp, uniqueName } from './brokers.js';

// The store goes away (a private redis-server killed by its PID) while messages keep coming:
// nothing is acked without its outcome, nothing runs without its key, nothing is lost; the
// messages go through once the store is back.
describe('RabbitMQ consumer through a store outage', () => {
  it('messages that arrive while the store is down are given back, then processed once', async () => {
    const server = await startPrivateRedis();
    const storeClient = new Redis(server.url, { maxRetriesPerRequest: 1 });
    storeClient.on('error', () => {}); // the outage is the point
    const shared = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
    const prefix = `${uniqueName('idem-consumers-outage')}:`;
    const ledger = createFencedLedger(shared, `${prefix}ledger:`);
    const connection = await connectAmqp();
    const queue = uniqueName('idem-test-outage');
    const channel = await connection.createChannel();
    try {
      await channel.assertQueue(queue, { durable: false });
      const statuses: MessageStatus[] = [];
      let runs = 0;
      const consumer = await consumeAmqp({
        store: createRedisStore({ client: storeClient, keyPrefix: prefix }),
        channel: await connection.createChannel(),
        queue,
        storeTimeoutMs: 300,
        retryDelayMs: 150,
        // A message the store cannot take waits in the consumer about a lease before it is
        // given back (ccrev): a short one, so the outage's give-backs come soon.
        leaseMs: 1_500,
        handler: async (message, { fence }) => {
          runs += 1;
          const id = String(message.properties.messageId);
          await ledger.write(id, fence, 'done');
          return id;
        },
        onMessage: (r) => statuses.push(r.status),
      });
      const send = (from: number, to: number) => {
        for (let i = from; i < to; i++)
          channel.sendToQueue(queue, Buffer.from(`{"n":${i}}`), { messageId: `m-${i}` });
      };
      const until = async (done: () => boolean) => {
        const deadline = performance.now() + 15_000;
        while (!done() && performance.now() < deadline) await sleep(25);
      };
      send(0, 5);
      await until(() => statuses.filter((s) => s === 'processed').length === 5);
      await server.stop(); // the outage
      send(5, 10);
      await until(() => statuses.filter((s) => s === 'failed').length >= 5);
      const duringOutage = runs;
      await server.start(); // same port; the client reconnects by itself
      await until(() => statuses.filter((s) => s === 'processed').length === 10);
      await consumer.stop(5_000);
      expect(duringOutage).toBe(5); // no handler ran without its key
      expect(runs).toBe(10);
      expect(await ledger.stats()).toEqual({ written: 10, replaced: 0, stale: 0 });
      expect((await channel.checkQueue(queue)).messageCount).toBe(0);
    } finally {
      await channel.deleteQueue(queue).catch(() => {});
      await connection.close().catch(() => {});
      await ledger.drop();
      storeClient.disconnect();
      shared.disconnect();
      await server.stop();
    }
  });
});
