// Review round 10 (rev10a): what onMessage is told, on the real RabbitMQ and Redis.
// Findings are `it.fails` (they state the correct behaviour); attacks that held are plain `it`.
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { consumeAmqp } from '../src/index.js';
import { connectAmqp, uniqueName } from './brokers.js';

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
const prefix = `${uniqueName('rev10a-consumers-rep')}:`;
afterAll(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

describe('rev10a consumers: reports', () => {
  // FIXED (was FINDING LOW): a redelivery of a message whose outcome was too large to record is acked without running the handler (right) but reported as 'processed' (classify maps OUTCOME_NOT_RECORDED to processed): onMessage counts one message processed twice.
  it("a duplicate of a message whose outcome was too large is reported 'replayed', not 'processed'", async () => {
    const connection = await connectAmqp();
    const queue = uniqueName('rev10a-too-large');
    const channel = await connection.createConfirmChannel();
    const statuses: string[] = [];
    let runs = 0;
    try {
      await channel.assertQueue(queue, { durable: false });
      const consumer = await consumeAmqp({
        store: createRedisStore({ client: redis, keyPrefix: prefix }),
        channel: await connection.createChannel(),
        queue,
        prefetch: 1,
        maxOutcomeBytes: 1_024,
        handler: async () => {
          runs++;
          return { report: 'x'.repeat(4_096) }; // over the cap: a marker is recorded instead
        },
        onMessage: (r) => statuses.push(r.status),
      });
      // The publisher's resend of the same message (same id, same body).
      for (let i = 0; i < 2; i++)
        channel.sendToQueue(queue, Buffer.from('{"n":1}'), { messageId: 'big-1' });
      await channel.waitForConfirms();
      const until = performance.now() + 10_000;
      while (statuses.length < 2 && performance.now() < until) await sleep(25);
      await consumer.stop(2_000);
      expect(runs).toBe(1); // held: never run twice
      // Expected: ['processed', 'replayed']. Observed: ['processed', 'processed'].
      expect(statuses).toEqual(['processed', 'replayed']);
    } finally {
      await channel.deleteQueue(queue).catch(() => undefined);
      await connection.close().catch(() => undefined);
    }
  });
});
