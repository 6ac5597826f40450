// consumers33: after a basic.cancel from the broker (its queue deleted), a consumer given
// `openChannel` closed the cancelled channel at once: a handler still running on it then
// could not send its ack (the channel gone: the message requeued, when its queue still exists,
// and redelivered). Now the channel stays open until its messages in flight are settled, their
// acks sent on it (at most maxHoldMs plus the store's answer bound), then is closed. On the
// real RabbitMQ and Redis.
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { expect, it } from 'vitest';
import { type ConsumerStatus, consumeAmqp, type MessageStatus } from '../src/index.js';
import { amqpQueues, connectAmqp, recordingOpenChannel, redisBed, uniqueName } from './brokers.js';
import { until } from './late-store.js';

const queues = amqpQueues();
const bed = redisBed('consumers33-cancel');

it('a handler running when the broker cancels the consumer acks on its channel, which closes after it', {
  timeout: 40_000,
}, async () => {
  const connection = await connectAmqp();
  connection.on('error', () => {});
  const queue = uniqueName('c33-cancel');
  queues.push(queue);
  const admin = await connection.createChannel();
  await admin.assertQueue(queue);
  // What happened on each channel the consumer was given, in order.
  const { openChannel, log, errors } = recordingOpenChannel(connection, queue);
  let finish: () => void = () => {};
  const gate = new Promise<void>((resolve) => {
    finish = resolve;
  });
  let runs = 0;
  const statuses: ConsumerStatus[] = [];
  const reports: MessageStatus[] = [];
  const consumer = await consumeAmqp({
    store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
    openChannel,
    queue,
    reconnectDelayMs: 100,
    handler: async () => {
      runs += 1;
      await gate;
      return 'ok';
    },
    onConsumerStatus: (s) => statuses.push(s),
    onMessage: ({ status }) => reports.push(status),
  });
  try {
    admin.sendToQueue(queue, Buffer.from('x'), { messageId: 'c33-cancel-1' });
    expect(await until(() => runs === 1, 10_000)).toBe(true);
    // The broker cancels the consumer (basic.cancel) while the handler runs.
    await admin.deleteQueue(queue);
    expect(await until(() => statuses.length >= 1, 10_000)).toBe(true);
    expect(statuses[0]).toMatchObject({ type: 'lost', resubscribing: true });
    // Room for a close sent at the cancel to be answered (the old code: closed, then the ack
    // failed); the handler still runs meanwhile.
    await sleep(500);
    expect(log[0]).toEqual([]);
    finish();
    expect(await until(() => reports.length === 1, 10_000)).toBe(true);
    expect(reports).toEqual(['processed']);
    // Acked on the cancelled channel while it was open; closed after.
    expect(await until(() => log[0]?.includes('close') === true, 10_000)).toBe(true);
    expect(log[0]).toEqual(['ack', 'close']);
    // The broker took the ack (an unknown delivery tag would have closed the channel with an error).
    expect(errors).toEqual([]);
    // And the consumer came back on a new channel (openChannel declared the queue again).
    expect(await until(() => statuses.length === 2, 10_000)).toBe(true);
    expect(statuses[1]).toEqual({ type: 'resumed' });
  } finally {
    finish();
    await consumer.stop(5_000);
    await connection.close().catch(() => undefined);
  }
  expect(runs).toBe(1);
});

it('stop() while a cancelled channel waits for a handler closes that channel too (within its timeoutMs)', {
  timeout: 40_000,
}, async () => {
  const connection = await connectAmqp();
  connection.on('error', () => {});
  const queue = uniqueName('c33-cancel-stop');
  queues.push(queue);
  const admin = await connection.createChannel();
  await admin.assertQueue(queue);
  const closed: boolean[] = [];
  let finish: () => void = () => {};
  const gate = new Promise<void>((resolve) => {
    finish = resolve;
  });
  let runs = 0;
  const statuses: ConsumerStatus[] = [];
  const consumer = await consumeAmqp({
    store: createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}stop:` }),
    openChannel: async () => {
      const channel = await connection.createChannel();
      const index = closed.length;
      closed.push(false);
      channel.on('error', () => {});
      channel.on('close', () => {
        closed[index] = true;
      });
      await channel.assertQueue(queue);
      return channel;
    },
    queue,
    // Long: no reconnection before the stop.
    reconnectDelayMs: 20_000,
    handler: async () => {
      runs += 1;
      await gate;
      return 'ok';
    },
    onConsumerStatus: (s) => statuses.push(s),
  });
  try {
    admin.sendToQueue(queue, Buffer.from('x'), { messageId: 'c33-cancel-stop-1' });
    expect(await until(() => runs === 1, 10_000)).toBe(true);
    await admin.deleteQueue(queue);
    expect(await until(() => statuses.length >= 1, 10_000)).toBe(true);
    expect(closed).toEqual([false]);
    // The handler never ends within the stop's timeoutMs: stop() closes the channel anyway.
    await consumer.stop(300);
    expect(await until(() => closed[0] === true, 5_000)).toBe(true);
  } finally {
    finish();
    await consumer.stop(1_000);
    await connection.close().catch(() => undefined);
  }
});
