// consumers-late: on the real brokers (RabbitMQ, NATS JetStream; Redis store underneath), an
// acquisition the store answers late never starts the handler once the message was given
// back (its maxHoldMs passed) or the consumer's stop() resolved, and stop() waits (bounded)
// for the acquisitions of messages already given back: before the fix the handler ran after
// stop() had resolved, for a message the broker was already redelivering.
import type { IdempotencyStore } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import type { ConsumeMessage } from 'amqplib';
import { Redis } from 'ioredis';
import type { JsMsg } from 'nats';
import { afterAll, describe, expect, it } from 'vitest';
import { consumeAmqp, consumeJetStream, type MessageReport } from '../src/index.js';
import { connectAmqp, durableStream, jetStreamBed, uniqueName } from './brokers.js';
import { lateAcquires, until } from './late-store.js';

const bed = jetStreamBed('late-acquire');
const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
const prefix = `${uniqueName('late-acquire-brokers')}:`;
const redisStore = (): IdempotencyStore => createRedisStore({ client: redis, keyPrefix: prefix });
const queues: string[] = [];
afterAll(async () => {
  const connection = await connectAmqp();
  const channel = await connection.createChannel();
  for (const queue of queues) await channel.deleteQueue(queue).catch(() => undefined);
  await connection.close().catch(() => undefined);
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

/** What one consumer saw: its reports' statuses and error codes, and when its handler ran. */
function watch() {
  const seen = { statuses: [] as string[], codes: [] as unknown[], ranAt: [] as number[] };
  return {
    seen,
    options: {
      handler: async () => {
        seen.ranAt.push(performance.now());
        return 'ok';
      },
      onMessage: (r: MessageReport<unknown>) => {
        seen.statuses.push(r.status);
        seen.codes.push((r.error as { code?: unknown } | undefined)?.code);
      },
    },
  };
}

describe('consumers-late: RabbitMQ', () => {
  async function bench() {
    const connection = await connectAmqp();
    const channel = await connection.createChannel();
    const queue = uniqueName('late-acquire');
    queues.push(queue);
    await channel.assertQueue(queue, { durable: false });
    /** A second consumer with a store that answers at once: how the redelivery fares. */
    const redelivery = async () => {
      const second = watch();
      const consumer = await consumeAmqp<ConsumeMessage, unknown>({
        channel: await connection.createChannel(),
        queue,
        store: redisStore(),
        ...second.options,
      });
      await until(() => second.seen.statuses.length > 0);
      await consumer.stop(2_000);
      return second.seen;
    };
    return { connection, channel, queue, redelivery };
  }

  it('given back at maxHoldMs while the acquisition is unanswered: stop() waits for it, the handler never runs, the redelivery runs at once', async () => {
    const { connection, channel, queue, redelivery } = await bench();
    try {
      const { store, log } = lateAcquires(redisStore(), 700, (n) => n === 1);
      const first = watch();
      const consumer = await consumeAmqp<ConsumeMessage, unknown>({
        channel,
        queue,
        store,
        maxHoldMs: 200,
        retryDelayMs: 5_000,
        ...first.options,
      });
      channel.sendToQueue(queue, Buffer.from('a'), { messageId: uniqueName('m') });
      expect(await until(() => first.seen.statuses.length === 1)).toBe(true);
      expect(first.seen.codes).toEqual(['LEASE_LOST']);
      await consumer.stop(5_000);
      const stoppedAt = performance.now();
      // stop() waited for the late answer and its release (owner-checked: still the owner).
      expect(log.lateAnswers).toBe(1);
      expect(log.releases).toEqual([{ ok: true }]);
      expect(await log.answeredLate()).toBe(true);
      await until(() => first.seen.ranAt.length > 0, 200);
      expect(first.seen.ranAt.filter((t) => t >= stoppedAt)).toEqual([]);
      expect(first.seen.ranAt).toEqual([]);
      // The key was released: the redelivery runs the handler now, not a lease (30 s) later.
      const second = await redelivery();
      expect(second.statuses).toEqual(['processed']);
      expect(second.ranAt).toHaveLength(1);
    } finally {
      await connection.close().catch(() => undefined);
    }
  });

  it('stop(timeoutMs) passes while the acquisition is unanswered: the handler never starts after stop() resolved', async () => {
    const { connection, channel, queue, redelivery } = await bench();
    try {
      const { store, log } = lateAcquires(redisStore(), 600, (n) => n === 1);
      const first = watch();
      const consumer = await consumeAmqp<ConsumeMessage, unknown>({
        channel,
        queue,
        store,
        ...first.options,
      });
      channel.sendToQueue(queue, Buffer.from('b'), { messageId: uniqueName('m') });
      expect(await until(() => log.acquires === 1)).toBe(true);
      await consumer.stop(100);
      const stoppedAt = performance.now();
      expect(await log.answeredLate()).toBe(true);
      expect(await until(() => first.seen.statuses.length === 1)).toBe(true);
      expect(first.seen.ranAt.filter((t) => t >= stoppedAt)).toEqual([]);
      expect(first.seen.ranAt).toEqual([]);
      expect(first.seen).toMatchObject({ statuses: ['failed'], codes: ['HANDLER_NOT_STARTED'] });
      expect(log.releases).toEqual([{ ok: true }]);
      const second = await redelivery();
      expect(second.statuses).toEqual(['processed']);
    } finally {
      await connection.close().catch(() => undefined);
    }
  });
});

describe('consumers-late: NATS JetStream', () => {
  async function redelivery(stream: string) {
    const second = watch();
    const consumer = await consumeJetStream<JsMsg, unknown>({
      consumer: await bed.nc.jetstream().consumers.get(stream, 'w'),
      store: redisStore(),
      ...second.options,
    });
    await until(() => second.seen.statuses.length > 0);
    await consumer.stop(2_000);
    return second.seen;
  }

  it('given back at maxHoldMs while the acquisition is unanswered: stop() waits for it, the handler never runs, the redelivery runs at once', async () => {
    const stream = await durableStream(bed.nc, 'late_hold', bed.streams, {
      ackWaitMs: 10_000,
      count: 1,
    });
    const { store, log } = lateAcquires(redisStore(), 700, (n) => n === 1);
    const first = watch();
    const consumer = await consumeJetStream<JsMsg, unknown>({
      consumer: await bed.nc.jetstream().consumers.get(stream, 'w'),
      store,
      maxHoldMs: 200,
      retryDelayMs: 300,
      ...first.options,
    });
    expect(await until(() => first.seen.statuses.length === 1)).toBe(true);
    expect(first.seen.codes).toEqual(['LEASE_LOST']);
    await consumer.stop(5_000);
    const stoppedAt = performance.now();
    expect(log.lateAnswers).toBe(1);
    expect(log.releases).toEqual([{ ok: true }]);
    await until(() => first.seen.ranAt.length > 0, 200);
    expect(first.seen.ranAt.filter((t) => t >= stoppedAt)).toEqual([]);
    expect(first.seen.ranAt).toEqual([]);
    const second = await redelivery(stream);
    expect(second.statuses).toEqual(['processed']);
    expect(second.ranAt).toHaveLength(1);
  });

  it('stop(timeoutMs) passes while the acquisition is unanswered: the handler never starts after stop() resolved', async () => {
    const stream = await durableStream(bed.nc, 'late_stop', bed.streams, {
      ackWaitMs: 10_000,
      count: 1,
    });
    const { store, log } = lateAcquires(redisStore(), 600, (n) => n === 1);
    const first = watch();
    const consumer = await consumeJetStream<JsMsg, unknown>({
      consumer: await bed.nc.jetstream().consumers.get(stream, 'w'),
      store,
      retryDelayMs: 100,
      ...first.options,
    });
    expect(await until(() => log.acquires === 1)).toBe(true);
    await consumer.stop(100);
    const stoppedAt = performance.now();
    expect(await log.answeredLate()).toBe(true);
    expect(await until(() => first.seen.statuses.length === 1)).toBe(true);
    expect(first.seen.ranAt.filter((t) => t >= stoppedAt)).toEqual([]);
    expect(first.seen.ranAt).toEqual([]);
    expect(first.seen).toMatchObject({ statuses: ['failed'], codes: ['HANDLER_NOT_STARTED'] });
    expect(log.releases).toEqual([{ ok: true }]);
    const second = await redelivery(stream);
    expect(second.statuses).toEqual(['processed']);
  });
});
