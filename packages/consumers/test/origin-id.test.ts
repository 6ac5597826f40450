// The handler's `originId` on the real brokers (README "Handler"): one id per logical message,
// the same on the redelivery after a failed run (a write named by it is not made twice),
// another for another message; 32 hex characters that do not reveal the store's tokens.
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { headers, type NatsConnection } from 'nats';
import { afterAll, describe, expect, it } from 'vitest';
import { consumeAmqp, consumeJetStream } from '../src/index.js';
import { connectAmqp, connectNats, durableStream, uniqueName } from './brokers.js';

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
const prefix = `${uniqueName('consumers-origin')}:`;
const streams: string[] = [];
let nc: NatsConnection | undefined;
afterAll(async () => {
  if (nc) {
    const jsm = await nc.jetstreamManager();
    for (const stream of streams) await jsm.streams.delete(stream).catch(() => {});
    await nc.close();
  }
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

/** Waits until `done()` holds, 15 s at most (the assertions after it then fail). */
async function until(done: () => boolean): Promise<void> {
  const end = performance.now() + 15_000;
  while (!done() && performance.now() < end) await sleep(25);
}

/** The originIds each message id's runs saw, in order. */
type Seen = Map<string, string[]>;
const record = (seen: Seen, id: string, originId: string) =>
  seen.set(id, [...(seen.get(id) ?? []), originId]);

function expectOneOriginPerMessage(seen: Seen): void {
  const flaky = seen.get('flaky') ?? [];
  const steady = seen.get('steady') ?? [];
  // The failed run and its redelivery: one logical message, one originId.
  expect(flaky).toHaveLength(2);
  expect(flaky[1]).toBe(flaky[0]);
  expect(steady).toHaveLength(1);
  expect(steady[0]).not.toBe(flaky[0]);
  for (const id of [...flaky, ...steady]) expect(id).toMatch(/^[0-9a-f]{32}$/);
}

describe('consumers: originId on the real brokers', () => {
  it('RabbitMQ: a failed run and its redelivery share the originId; another message has another', async () => {
    const connection = await connectAmqp();
    const queue = uniqueName('idem-test-origin');
    const channel = await connection.createConfirmChannel();
    try {
      await channel.assertQueue(queue, { durable: false });
      const seen: Seen = new Map();
      let done = 0;
      const consumer = await consumeAmqp({
        store: createRedisStore({ client: redis, keyPrefix: prefix }),
        channel: await connection.createChannel(),
        queue,
        prefetch: 1,
        retryDelayMs: 100,
        handler: async (message, { originId }) => {
          const id = String(message.properties.messageId);
          record(seen, id, originId);
          if (id === 'flaky' && seen.get(id)?.length === 1) throw new Error('downstream timeout');
          return { ok: id };
        },
        onMessage: (r) => {
          if (r.status === 'processed') done++;
        },
      });
      channel.sendToQueue(queue, Buffer.from('{"amount":1}'), { messageId: 'flaky' });
      channel.sendToQueue(queue, Buffer.from('{"amount":2}'), { messageId: 'steady' });
      await channel.waitForConfirms();
      await until(() => done >= 2);
      await consumer.stop(5_000);
      expectOneOriginPerMessage(seen);
    } finally {
      await channel.deleteQueue(queue).catch(() => {});
      await connection.close().catch(() => {});
    }
  });

  it('NATS JetStream: a failed run and its redelivery share the originId; another message has another', async () => {
    nc = await connectNats();
    const stream = await durableStream(nc, 'IDEM_ORIGIN', streams, { ackWaitMs: 30_000, count: 0 });
    const js = nc.jetstream();
    for (const id of ['flaky', 'steady']) {
      const h = headers();
      h.set('Nats-Msg-Id', id);
      await js.publish(`${stream}.orders`, JSON.stringify({ id }), { headers: h });
    }
    const seen: Seen = new Map();
    let done = 0;
    const consumer = await consumeJetStream({
      store: createRedisStore({ client: redis, keyPrefix: prefix }),
      consumer: await js.consumers.get(stream, 'w'),
      scope: ['test', uniqueName('origin')],
      retryDelayMs: 100,
      handler: async (message, { originId }) => {
        const { id } = JSON.parse(Buffer.from(message.data).toString()) as { id: string };
        record(seen, id, originId);
        if (id === 'flaky' && seen.get(id)?.length === 1) throw new Error('downstream timeout');
        return { ok: id };
      },
      onMessage: (r) => {
        if (r.status === 'processed') done++;
      },
    });
    await until(() => done >= 2);
    await consumer.stop(5_000);
    expectOneOriginPerMessage(seen);
  });
});
