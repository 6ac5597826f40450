import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidInputError } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { AckPolicy, headers, type NatsConnection } from 'nats';
import { afterAll, describe, expect, it } from 'vitest';
import { consumeAmqp, consumeJetStream, type IdempotentConsumer } from '../src/index.js';
import { connectAmqp, connectNats, uniqueName } from './brokers.js';

// Adversarial review: isolation between applications, handlers that never settle, bad options.
describe('consumers under review', () => {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  const prefix = `${uniqueName('idem-consumers-review')}:`;
  const store = createRedisStore({ client: redis, keyPrefix: prefix });
  const consumers: IdempotentConsumer[] = [];
  const releases: (() => void)[] = [];
  let nc: NatsConnection | undefined;
  const streams: string[] = [];
  afterAll(async () => {
    for (const release of releases) release();
    for (const consumer of consumers) await consumer.stop(2_000);
    if (nc) {
      const jsm = await nc.jetstreamManager();
      for (const stream of streams) await jsm.streams.delete(stream).catch(() => {});
      await nc.close();
    }
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });
  const until = async (done: () => boolean, ms: number) => {
    const deadline = performance.now() + ms;
    while (!done() && performance.now() < deadline) await sleep(25);
  };
  const newStream = async (ackWaitMs: number, durables: string[]) => {
    nc ??= await connectNats();
    const stream = uniqueName('IDEM_REVIEW').replace(/-/g, '_');
    streams.push(stream);
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] });
    for (const durable_name of durables)
      await jsm.consumers.add(stream, {
        durable_name,
        ack_policy: AckPolicy.Explicit,
        ack_wait: ackWaitMs * 1_000_000,
      });
    const js = nc.jetstream();
    return {
      stream,
      js,
      publish: async (id: string) => {
        const h = headers();
        h.set('Nats-Msg-Id', id);
        await js.publish(`${stream}.orders`, JSON.stringify({ id }), { headers: h });
      },
    };
  };

  it('JetStream: two durable consumers (two applications) on one stream and one store both run every message', async () => {
    const { stream, js, publish } = await newStream(5_000, ['billing', 'shipping']);
    const runs = { billing: 0, shipping: 0 };
    for (const app of ['billing', 'shipping'] as const)
      consumers.push(
        await consumeJetStream({
          store, // shared, same key prefix: the default scope must tell them apart
          consumer: await js.consumers.get(stream, app),
          handler: async () => {
            runs[app] += 1;
            return app;
          },
        }),
      );
    for (const id of ['o-1', 'o-2', 'o-3']) await publish(id);
    // Before the fix the scope was the stream alone: shipping's deliveries were acked as
    // replays of billing's outcomes (never shipped), or the reverse.
    await until(() => runs.billing + runs.shipping >= 6, 10_000);
    expect(runs).toEqual({ billing: 3, shipping: 3 });
  });

  it('JetStream: a handler that never settles gives its message back after maxHoldMs (no endless working())', async () => {
    const { stream, js, publish } = await newStream(1_000, ['workers']);
    let runs = 0;
    let done = 0;
    consumers.push(
      await consumeJetStream({
        store,
        consumer: await js.consumers.get(stream, 'workers'),
        leaseMs: 600,
        maxHoldMs: 1_500,
        workingIntervalMs: 300,
        retryDelayMs: 100,
        handler: async () => {
          runs += 1;
          if (runs === 1) await new Promise<void>((resolve) => releases.push(resolve)); // hangs
          done += 1;
          return 'ok';
        },
      }),
    );
    await publish('hang-1');
    // Before the fix `working()` kept ack_wait from passing for ever: the message was stuck.
    await until(() => done === 1, 10_000);
    expect({ runs, done }).toEqual({ runs: 2, done: 1 });
  });

  it('RabbitMQ: a handler that never settles gives its message (and prefetch slot) back after maxHoldMs', async () => {
    const connection = await connectAmqp();
    const queue = uniqueName('idem-review-hang');
    const channel = await connection.createChannel();
    try {
      await channel.assertQueue(queue, { durable: false });
      let runs = 0;
      let done = 0;
      const consumer = await consumeAmqp({
        store,
        channel: await connection.createChannel(),
        queue,
        prefetch: 1,
        leaseMs: 600,
        maxHoldMs: 1_500,
        retryDelayMs: 100,
        handler: async () => {
          runs += 1;
          if (runs === 1) await new Promise<void>((resolve) => releases.push(resolve));
          done += 1;
          return 'ok';
        },
      });
      channel.sendToQueue(queue, Buffer.from('{}'), { messageId: 'hang-amqp' });
      // Before the fix the only prefetch slot was held until RabbitMQ's consumer_timeout (30 min).
      await until(() => done === 1, 10_000);
      expect({ runs, done }).toEqual({ runs: 2, done: 1 });
      await consumer.stop(2_000);
      // The late handler settling now must not ack a delivery tag already given back (that
      // would close the channel): the queue is empty and the channel still answers.
      for (const release of releases.splice(0)) release();
      await sleep(200);
      expect((await channel.checkQueue(queue)).messageCount).toBe(0);
    } finally {
      await channel.deleteQueue(queue).catch(() => {});
      await connection.close().catch(() => {});
    }
  });

  it('bad retryDelayMs is a typed error, not a hot redelivery loop', async () => {
    const fake = { consume: async () => ({ stop() {}, async *[Symbol.asyncIterator]() {} }) };
    for (const retryDelayMs of [-1, Number.NaN, Number.POSITIVE_INFINITY])
      await expect(
        consumeJetStream({ store, consumer: fake, handler: async () => 1, retryDelayMs }),
      ).rejects.toBeInstanceOf(InvalidInputError);
  });
});
