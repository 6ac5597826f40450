// consumers32: a consumer whose broker-side consumer goes away (RabbitMQ: its queue deleted,
// `basic.cancel`; its channel closed; JetStream: its consumer deleted, its pull ended) went
// quietly dead: the app ran on and processed nothing, forever. Now it is said
// (`onConsumerStatus`, `consumer.closed`), and JetStream pulls again once the consumer exists
// again. On the real RabbitMQ, NATS JetStream and Redis; every queue and stream is the test's own.
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { AckPolicy } from 'nats';
import { describe, expect, it } from 'vitest';
import { type ConsumerStatus, consumeAmqp, consumeJetStream } from '../src/index.js';
import { amqpQueues, connectAmqp, connectNats, jetStreamBed, uniqueName } from './brokers.js';

const bed = jetStreamBed('consumers32-lost');
const queues = amqpQueues();

/** Whether `promise` settles within `ms`, and with what. */
async function within<T>(
  promise: Promise<T>,
  ms: number,
): Promise<{ value?: T; settled: boolean }> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<{ settled: false }>((resolve) => {
    timer = setTimeout(() => resolve({ settled: false }), ms);
  });
  try {
    return await Promise.race([promise.then((value) => ({ value, settled: true })), late]);
  } finally {
    clearTimeout(timer);
  }
}

const waitFor = async (check: () => boolean, ms: number) => {
  const deadline = performance.now() + ms;
  while (!check() && performance.now() < deadline) await sleep(20);
};

describe('consumers32: a consumer the broker ends is never quietly dead', () => {
  it('RabbitMQ: its queue deleted (basic.cancel), closed answers CONSUMER_LOST and the status says so', {
    timeout: 20_000,
  }, async () => {
    const connection = await connectAmqp();
    try {
      const channel = await connection.createChannel();
      const queue = uniqueName('consumers32-cancel');
      queues.push(queue);
      await channel.assertQueue(queue, { durable: false });
      const statuses: ConsumerStatus[] = [];
      const runs: string[] = [];
      const consumer = await consumeAmqp({
        channel,
        queue,
        store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
        handler: async (message) => {
          runs.push(message.properties.messageId as string);
          return 'ok';
        },
        onConsumerStatus: (s) => statuses.push(s),
      });
      channel.sendToQueue(queue, Buffer.from('a'), { messageId: 'before' });
      await waitFor(() => runs.length === 1, 5_000);
      expect(runs).toEqual(['before']);
      // Deleted from another channel (an operator, a policy): the broker cancels the consumer.
      const admin = await connection.createChannel();
      await admin.deleteQueue(queue);
      const ended = await within(consumer.closed, 5_000);
      expect(ended.settled).toBe(true);
      expect(ended.value).toMatchObject({ code: 'CONSUMER_LOST', name: 'ConsumerLostError' });
      expect(statuses).toHaveLength(1);
      expect(statuses[0]).toMatchObject({ type: 'lost', resubscribing: false });
      // The app's channel is still open (nothing was done on it that the broker refuses).
      await channel.checkQueue(await admin.assertQueue('').then((q) => q.queue));
      await consumer.stop(1_000);
    } finally {
      await connection.close().catch(() => undefined);
    }
  });

  it('RabbitMQ: its channel closed under it, closed answers CONSUMER_LOST; stop() answers undefined', {
    timeout: 20_000,
  }, async () => {
    const connection = await connectAmqp();
    try {
      const queue = uniqueName('consumers32-chclose');
      queues.push(queue);
      const channel = await connection.createChannel();
      await channel.assertQueue(queue, { durable: false });
      const store = createRedisStore({ client: bed.redis, keyPrefix: bed.prefix });
      const consumer = await consumeAmqp({ channel, queue, store, handler: async () => 'ok' });
      // A channel-level error from the broker closes it (here: a passive declare of a queue
      // that does not exist, 404), the consumer with it.
      channel.on('error', () => {});
      await channel.checkQueue(uniqueName('consumers32-missing')).catch(() => undefined);
      const ended = await within(consumer.closed, 5_000);
      expect(ended.settled).toBe(true);
      expect(ended.value).toMatchObject({ code: 'CONSUMER_LOST' });
      await consumer.stop(1_000);

      const other = await connection.createChannel();
      const stopped = await consumeAmqp({
        channel: other,
        queue,
        store,
        handler: async () => 'ok',
      });
      await stopped.stop(1_000);
      expect(await within(stopped.closed, 1_000)).toEqual({ settled: true, value: undefined });
    } finally {
      await connection.close().catch(() => undefined);
    }
  });

  it('JetStream: its consumer deleted is reported, and once created again it pulls and processes again', {
    timeout: 40_000,
  }, async () => {
    const { jsm, name, js } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    const statuses: ConsumerStatus[] = [];
    const runs: string[] = [];
    const consumer = await consumeJetStream({
      store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
      consumer: await js.consumers.get(name, 'w'),
      expiresMs: 1_000,
      handler: async (message) => {
        runs.push(message.string());
        return 'ok';
      },
      onConsumerStatus: (s) => statuses.push(s),
    });
    try {
      await js.publish(`${name}.a`, 'one', { msgID: 'c32-one' });
      await waitFor(() => runs.length === 1, 5_000);
      await jsm.consumers.delete(name, 'w');
      await waitFor(() => statuses.length >= 1, 10_000);
      expect(statuses[0]).toMatchObject({ type: 'lost', resubscribing: true });
      expect((statuses[0] as { error: { code: string } }).error.code).toBe('CONSUMER_LOST');
      await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
      await js.publish(`${name}.a`, 'two', { msgID: 'c32-two' });
      await waitFor(() => runs.includes('two'), 20_000);
      // 'one' is delivered again by the new consumer and replayed (its handler not run again).
      expect(runs).toEqual(['one', 'two']);
      expect(statuses.map((s) => s.type)).toEqual(['lost', 'resumed']);
      expect((await within(consumer.closed, 10)).settled).toBe(false);
    } finally {
      await consumer.stop(5_000);
    }
    expect(await within(consumer.closed, 1_000)).toEqual({ settled: true, value: undefined });
  });

  it('JetStream: a pull that ends by itself is consumed again (1 s later) and processes again; stop() while lost ends it', {
    timeout: 30_000,
  }, async () => {
    const { jsm, name, js } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    const real = await js.consumers.get(name, 'w');
    const pulls: Array<{ stop(): void }> = [];
    // The real consumer, its pulls kept so the test can end one as nats.js does on its own
    // (a 400, a resource it gave up on).
    const consumer = {
      consume: async (options?: Parameters<typeof real.consume>[0]) => {
        const pulled = await real.consume(options);
        pulls.push(pulled);
        return pulled;
      },
      info: (cached?: boolean) => real.info(cached),
    } as unknown as typeof real;
    const statuses: ConsumerStatus[] = [];
    const runs: string[] = [];
    const idem = await consumeJetStream({
      store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
      consumer,
      handler: async (message) => {
        runs.push(message.string());
        return 'ok';
      },
      onConsumerStatus: (s) => statuses.push(s),
    });
    try {
      pulls[0]?.stop();
      await waitFor(() => statuses.length >= 2, 10_000);
      expect(statuses.map((s) => s.type)).toEqual(['lost', 'resumed']);
      expect(statuses[0]).toMatchObject({ type: 'lost', resubscribing: true });
      expect(pulls).toHaveLength(2);
      await js.publish(`${name}.a`, 'after', { msgID: 'c32-after' });
      await waitFor(() => runs.length === 1, 10_000);
      expect(runs).toEqual(['after']);
      // Deleted, then stopped while lost: stop() ends it, closed answers undefined.
      await jsm.consumers.delete(name, 'w');
      await waitFor(() => statuses.length >= 3, 10_000);
      expect(statuses[2]).toMatchObject({ type: 'lost', resubscribing: true });
    } finally {
      await idem.stop(5_000);
    }
    expect(await within(idem.closed, 1_000)).toEqual({ settled: true, value: undefined });
    expect(pulls).toHaveLength(2);
  });

  it('JetStream: its connection closed without stop(), closed answers CONSUMER_LOST', {
    timeout: 20_000,
  }, async () => {
    const { jsm, name } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    const nc = await connectNats();
    const statuses: ConsumerStatus[] = [];
    const consumer = await consumeJetStream({
      store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
      consumer: await nc.jetstream().consumers.get(name, 'w'),
      handler: async () => 'ok',
      onConsumerStatus: (s) => statuses.push(s),
    });
    await nc.close();
    const ended = await within(consumer.closed, 10_000);
    expect(ended.settled).toBe(true);
    expect(ended.value).toMatchObject({ code: 'CONSUMER_LOST' });
    expect(statuses).toMatchObject([{ type: 'lost', resubscribing: false }]);
    await consumer.stop(1_000);
  });
});
