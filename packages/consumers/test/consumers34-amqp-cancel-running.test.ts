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
import {
  amqpQueues,
  connectAmqp,
  recordingOpenChannel,
  recordSettles,
  redisBed,
  uniqueName,
} from './brokers.js';
import { until } from './late-store.js';

const queues = amqpQueues();
const bed = redisBed('consumers34-cancel');

/** A connection, a queue of its own (deleted after the file) and a channel to drive it. */
async function queueBench(label: string) {
  const connection = await connectAmqp();
  connection.on('error', () => {});
  const queue = uniqueName(label);
  queues.push(queue);
  const admin = await connection.createChannel();
  await admin.assertQueue(queue);
  return { connection, queue, admin };
}

/** A handler that waits for `finish()`; the consumer's conflicts, statuses and runs. */
function gatedConsumer() {
  let finish: () => void = () => {};
  const gate = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const seen = { runs: 0, conflicts: 0, statuses: [] as ConsumerStatus[] };
  return {
    finish: () => finish(),
    seen,
    options: {
      handler: async () => {
        seen.runs += 1;
        await gate;
        return 'ok';
      },
      onEvent: (event: { type: string }) => {
        if (event.type === 'conflict') seen.conflicts += 1;
      },
      onConsumerStatus: (s: ConsumerStatus) => seen.statuses.push(s),
    },
  };
}

it('the queue deleted under a running handler on the application’s channel: lost for good, the ack still sent, a held duplicate given back', {
  timeout: 30_000,
}, async () => {
  const { connection, queue, admin } = await queueBench('c34-cancel');
  const channel: Channel = await connection.createChannel();
  const errors: unknown[] = [];
  const events: string[] = [];
  channel.on('error', (error) => errors.push(error));
  recordSettles(channel, events);
  const { finish, seen, options } = gatedConsumer();
  const reports: Array<[boolean, MessageStatus]> = [];
  const consumer = await consumeAmqp({
    store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
    channel,
    queue,
    prefetch: 2,
    ...options,
    onMessage: ({ message, status }) => reports.push([message.fields.redelivered, status]),
  });
  let closedWith: unknown = 'pending';
  void consumer.closed.then((value) => {
    closedWith = value;
  });
  try {
    admin.sendToQueue(queue, Buffer.from('x'), { messageId: 'c34-cancel-1' });
    expect(await until(() => seen.runs === 1, 10_000)).toBe(true);
    // A publisher's resend: held behind the local run (no report yet).
    admin.sendToQueue(queue, Buffer.from('x'), { messageId: 'c34-cancel-1' });
    expect(await until(() => seen.conflicts === 1, 10_000)).toBe(true);
    expect(reports).toEqual([]);
    await admin.deleteQueue(queue);
    expect(await until(() => seen.statuses.length === 1, 10_000)).toBe(true);
    expect(seen.statuses[0]).toMatchObject({ type: 'lost', resubscribing: false });
    const lost = (seen.statuses[0] as { error: unknown }).error;
    expect(lost).toBeInstanceOf(ConsumerLostError);
    expect(await until(() => closedWith !== 'pending', 5_000)).toBe(true);
    expect(closedWith).toBe(lost);
    // The held duplicate went back at once (nack), the handler still running.
    expect(await until(() => reports.length === 1, 5_000)).toBe(true);
    expect(reports).toEqual([[false, 'in_progress']]);
    expect(events).toEqual(['nack']);
    expect(seen.runs).toBe(1);
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
    expect(seen.statuses).toHaveLength(1);
  } finally {
    finish();
    await consumer.stop(5_000);
    await connection.close().catch(() => undefined);
  }
  expect(seen.runs).toBe(1);
});

it('the queue deleted and declared again under a running handler (openChannel): its resend on the new channel is held behind it and replayed; each acked on its own channel', {
  timeout: 30_000,
}, async () => {
  const { connection, queue, admin } = await queueBench('c34-cancel-again');
  // What happened on each channel the consumer was given, in order.
  const { openChannel, log, errors } = recordingOpenChannel(connection, queue);
  const { finish, seen, options } = gatedConsumer();
  const reports: MessageStatus[] = [];
  const consumer = await consumeAmqp({
    store: createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}again:` }),
    openChannel,
    queue,
    reconnectDelayMs: 100,
    ...options,
    onMessage: ({ status }) => reports.push(status),
  });
  try {
    admin.sendToQueue(queue, Buffer.from('x'), { messageId: 'c34-again-1' });
    expect(await until(() => seen.runs === 1, 10_000)).toBe(true);
    await admin.deleteQueue(queue);
    // Lost, then consumed again on a new channel (openChannel declared the queue again).
    expect(await until(() => seen.statuses.length === 2, 10_000)).toBe(true);
    expect(seen.statuses.map((s) => s.type)).toEqual(['lost', 'resumed']);
    // The publisher resends while the first copy still runs on the cancelled channel.
    admin.sendToQueue(queue, Buffer.from('x'), { messageId: 'c34-again-1' });
    expect(await until(() => seen.conflicts === 1, 10_000)).toBe(true);
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
  expect(seen.runs).toBe(1);
});
