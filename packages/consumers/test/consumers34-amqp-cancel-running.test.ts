// consumers34: RabbitMQ cancels the consumer (basic.cancel: its queue deleted) while a handler
// runs, on the application's own channel (no openChannel; consumers33-amqp-cancel-drain covers
// the consumer's own channels). As documented: `lost` with `resubscribing: false`, `closed`
// answers the ConsumerLostError; a duplicate held behind the running handler goes back at once
// (told `in_progress`); the running handler runs on and its ack is sent on the channel (the
// application's: never closed by the consumer), which the broker takes without an error (the
// message went with its queue; its outcome is recorded); one report per delivery; stop()
// returns. On the real RabbitMQ and Redis.
import { createRedisStore } from '@idem/store-redis';
import type { Channel } from 'amqplib';
import { expect, it } from 'vitest';
import {
  ConsumerLostError,
  type ConsumerStatus,
  consumeAmqp,
  type MessageStatus,
} from '../src/index.js';
import { amqpQueues, connectAmqp, redisBed, uniqueName } from './brokers.js';
import { until } from './late-store.js';

const queues = amqpQueues();
const bed = redisBed('consumers34-cancel');

it('the queue deleted under a running handler on the application’s channel: lost for good, the ack still sent, a held duplicate given back', {
  timeout: 30_000,
}, async () => {
  const connection = await connectAmqp();
  connection.on('error', () => {});
  const queue = uniqueName('c34-cancel');
  queues.push(queue);
  const admin = await connection.createChannel();
  await admin.assertQueue(queue);
  const channel: Channel = await connection.createChannel();
  const errors: unknown[] = [];
  const events: string[] = [];
  channel.on('error', (error) => errors.push(error));
  channel.on('close', () => events.push('close'));
  for (const name of ['ack', 'nack'] as const) {
    const real = channel[name].bind(channel) as (...args: unknown[]) => void;
    (channel as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
      events.push(name);
      real(...args);
    };
  }
  let finish: () => void = () => {};
  const gate = new Promise<void>((resolve) => {
    finish = resolve;
  });
  let runs = 0;
  let conflicts = 0;
  const statuses: ConsumerStatus[] = [];
  const reports: Array<[boolean, MessageStatus]> = [];
  const consumer = await consumeAmqp({
    store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
    channel,
    queue,
    prefetch: 2,
    handler: async () => {
      runs += 1;
      await gate;
      return 'ok';
    },
    onEvent: (event) => {
      if (event.type === 'conflict') conflicts += 1;
    },
    onConsumerStatus: (s) => statuses.push(s),
    onMessage: ({ message, status }) => reports.push([message.fields.redelivered, status]),
  });
  let closedWith: unknown = 'pending';
  void consumer.closed.then((value) => {
    closedWith = value;
  });
  try {
    admin.sendToQueue(queue, Buffer.from('x'), { messageId: 'c34-cancel-1' });
    expect(await until(() => runs === 1, 10_000)).toBe(true);
    // A publisher's resend: held behind the local run (no report yet).
    admin.sendToQueue(queue, Buffer.from('x'), { messageId: 'c34-cancel-1' });
    expect(await until(() => conflicts === 1, 10_000)).toBe(true);
    expect(reports).toEqual([]);
    await admin.deleteQueue(queue);
    expect(await until(() => statuses.length === 1, 10_000)).toBe(true);
    expect(statuses[0]).toMatchObject({ type: 'lost', resubscribing: false });
    const lost = (statuses[0] as { error: unknown }).error;
    expect(lost).toBeInstanceOf(ConsumerLostError);
    expect(await until(() => closedWith !== 'pending', 5_000)).toBe(true);
    expect(closedWith).toBe(lost);
    // The held duplicate went back at once (nack), the handler still running.
    expect(await until(() => reports.length === 1, 5_000)).toBe(true);
    expect(reports).toEqual([[false, 'in_progress']]);
    expect(events).toEqual(['nack']);
    expect(runs).toBe(1);
    finish();
    expect(await until(() => reports.length === 2, 10_000)).toBe(true);
    expect(reports[1]).toEqual([false, 'processed']);
    expect(events).toEqual(['nack', 'ack']);
    await consumer.stop(5_000);
    // The broker took both on the application's channel (an unknown delivery tag closes the
    // channel with a PRECONDITION_FAILED): the channel is open and usable.
    await channel.checkExchange('amq.direct');
    expect(errors).toEqual([]);
    expect(events).toEqual(['nack', 'ack']);
    // Nothing more told after the loss: no `resumed`, one `lost`.
    expect(statuses).toHaveLength(1);
  } finally {
    finish();
    await consumer.stop(5_000);
    await connection.close().catch(() => undefined);
  }
  expect(runs).toBe(1);
});

it('the queue deleted and declared again under a running handler (openChannel): its resend on the new channel is held behind it and replayed; each acked on its own channel', {
  timeout: 30_000,
}, async () => {
  const connection = await connectAmqp();
  connection.on('error', () => {});
  const queue = uniqueName('c34-cancel-again');
  queues.push(queue);
  const admin = await connection.createChannel();
  await admin.assertQueue(queue);
  // What happened on each channel the consumer was given, in order.
  const log: string[][] = [];
  const errors: unknown[] = [];
  const openChannel = async () => {
    const channel: Channel = await connection.createChannel();
    const events: string[] = [];
    log.push(events);
    channel.on('error', (error) => errors.push(error));
    channel.on('close', () => events.push('close'));
    for (const name of ['ack', 'nack'] as const) {
      const real = channel[name].bind(channel) as (...args: unknown[]) => void;
      (channel as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
        events.push(name);
        real(...args);
      };
    }
    await channel.assertQueue(queue);
    return channel;
  };
  let finish: () => void = () => {};
  const gate = new Promise<void>((resolve) => {
    finish = resolve;
  });
  let runs = 0;
  let conflicts = 0;
  const statuses: ConsumerStatus[] = [];
  const reports: MessageStatus[] = [];
  const consumer = await consumeAmqp({
    store: createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}again:` }),
    openChannel,
    queue,
    reconnectDelayMs: 100,
    handler: async () => {
      runs += 1;
      await gate;
      return 'ok';
    },
    onEvent: (event) => {
      if (event.type === 'conflict') conflicts += 1;
    },
    onConsumerStatus: (s) => statuses.push(s),
    onMessage: ({ status }) => reports.push(status),
  });
  try {
    admin.sendToQueue(queue, Buffer.from('x'), { messageId: 'c34-again-1' });
    expect(await until(() => runs === 1, 10_000)).toBe(true);
    await admin.deleteQueue(queue);
    // Lost, then consumed again on a new channel (openChannel declared the queue again).
    expect(await until(() => statuses.length === 2, 10_000)).toBe(true);
    expect(statuses.map((s) => s.type)).toEqual(['lost', 'resumed']);
    // The publisher resends while the first copy still runs on the cancelled channel.
    admin.sendToQueue(queue, Buffer.from('x'), { messageId: 'c34-again-1' });
    expect(await until(() => conflicts === 1, 10_000)).toBe(true);
    expect(reports).toEqual([]);
    finish();
    expect(await until(() => reports.length === 2, 10_000)).toBe(true);
    expect([...reports].sort()).toEqual(['processed', 'replayed']);
    // The first acked on the cancelled channel, which then closed; the resend on the new one.
    expect(await until(() => log[0]?.includes('close') === true, 10_000)).toBe(true);
    expect(log[0]).toEqual(['ack', 'close']);
    expect(log[1]).toEqual(['ack']);
    expect(errors).toEqual([]);
    const check = await admin.checkQueue(queue);
    expect([check.messageCount, check.consumerCount]).toEqual([0, 1]);
  } finally {
    finish();
    await consumer.stop(5_000);
    await connection.close().catch(() => undefined);
  }
  expect(runs).toBe(1);
});
