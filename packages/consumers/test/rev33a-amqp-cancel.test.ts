// rev33a (review of the consumers33 merge f9c5900d): a RabbitMQ channel the broker cancelled
// (basic.cancel: its queue deleted) is kept open until its messages in flight settle. Attacks:
// the publisher's resend reaching the new channel while the first copy still runs on the
// cancelled one; two cancels in a row, each channel with a handler running; stop() while a
// cancelled channel waits and a reconnection is under way. Each time: the handler runs once per
// key, acks go on the channel each message came on (no channel error: no unknown delivery tag),
// every channel the consumer opened is closed once stopped, and stop() resolves. On the real
// RabbitMQ and Redis.
import { createRedisStore } from '@idem/store-redis';
import type { Channel, ChannelModel } from 'amqplib';
import { describe, expect, it } from 'vitest';
import { type ConsumerStatus, consumeAmqp, type MessageStatus } from '../src/index.js';
import { amqpQueues, connectAmqp, redisBed, uniqueName } from './brokers.js';
import { until } from './late-store.js';

const queues = amqpQueues();
const bed = redisBed('rev33a-cancel');

/** The channels `openChannel` made (each declares `queue`), their acks and whether each closed. */
function channels(connection: ChannelModel, queue: string) {
  const made: Array<{ acks: string[]; closed: boolean; errors: unknown[] }> = [];
  const openChannel = async () => {
    const channel: Channel = await connection.createChannel();
    const entry = { acks: [] as string[], closed: false, errors: [] as unknown[] };
    made.push(entry);
    channel.on('error', (error) => entry.errors.push(error));
    channel.on('close', () => {
      entry.closed = true;
    });
    const ack = channel.ack.bind(channel);
    channel.ack = (message, allUpTo) => {
      entry.acks.push(String(message.properties.messageId));
      ack(message, allUpTo);
    };
    await channel.assertQueue(queue);
    return channel;
  };
  return { made, openChannel };
}

/** Gates the handler waits at, by message id. */
function gates() {
  const open = new Map<string, () => void>();
  const wait = (id: string) =>
    new Promise<void>((resolve) => {
      open.set(id, resolve);
    });
  const openAll = () => {
    for (const release of open.values()) release();
  };
  return { wait, open: (id: string) => open.get(id)?.(), openAll };
}

describe('rev33a: RabbitMQ cancelled channel kept open for its messages in flight', () => {
  it('the resend on the new channel waits for the run on the cancelled one, then replays', {
    timeout: 60_000,
  }, async () => {
    const connection = await connectAmqp();
    connection.on('error', () => {});
    const queue = uniqueName('rev33a-cancel-resend');
    queues.push(queue);
    const admin = await connection.createChannel();
    await admin.assertQueue(queue);
    const { made, openChannel } = channels(connection, queue);
    const gate = gates();
    const runs: string[] = [];
    const statuses: ConsumerStatus[] = [];
    const reports: MessageStatus[] = [];
    const consumer = await consumeAmqp({
      store: createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}resend:` }),
      openChannel,
      queue,
      reconnectDelayMs: 100,
      leaseMs: 20_000,
      handler: async (message) => {
        const id = String(message.properties.messageId);
        runs.push(id);
        await gate.wait(id);
        return 'ok';
      },
      onConsumerStatus: (s) => statuses.push(s),
      onMessage: ({ status }) => reports.push(status),
    });
    try {
      admin.sendToQueue(queue, Buffer.from('x'), { messageId: 'resend-1' });
      expect(await until(() => runs.length === 1, 10_000)).toBe(true);
      await admin.deleteQueue(queue);
      // openChannel declares the queue again: the consumer comes back on a second channel.
      expect(await until(() => statuses.length === 2, 10_000)).toBe(true);
      expect(statuses.map((s) => s.type)).toEqual(['lost', 'resumed']);
      // The publisher resends (its confirm lost): the key is held by the run on channel 1.
      admin.sendToQueue(queue, Buffer.from('x'), { messageId: 'resend-1' });
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(reports).toEqual([]);
      gate.open('resend-1');
      expect(await until(() => reports.length === 2, 10_000)).toBe(true);
      expect(reports.sort()).toEqual(['processed', 'replayed']);
      expect(made.map((c) => c.acks)).toEqual([['resend-1'], ['resend-1']]);
      expect(await until(() => made[0]?.closed === true, 10_000)).toBe(true);
      expect(made.flatMap((c) => c.errors)).toEqual([]);
      expect((await admin.checkQueue(queue)).messageCount).toBe(0);
    } finally {
      gate.openAll();
      await consumer.stop(5_000);
      await connection.close().catch(() => undefined);
    }
    expect(runs).toEqual(['resend-1']);
    expect(made.every((c) => c.closed)).toBe(true);
  });

  it('two cancels in a row, a handler running on each channel: each acks on its own, all closed', {
    timeout: 60_000,
  }, async () => {
    const connection = await connectAmqp();
    connection.on('error', () => {});
    const queue = uniqueName('rev33a-cancel-twice');
    queues.push(queue);
    const admin = await connection.createChannel();
    await admin.assertQueue(queue);
    const { made, openChannel } = channels(connection, queue);
    const gate = gates();
    const runs: string[] = [];
    const statuses: string[] = [];
    const reports: MessageStatus[] = [];
    const consumer = await consumeAmqp({
      store: createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}twice:` }),
      openChannel,
      queue,
      reconnectDelayMs: 100,
      reconnectMaxDelayMs: 200,
      handler: async (message) => {
        const id = String(message.properties.messageId);
        runs.push(id);
        await gate.wait(id);
        return 'ok';
      },
      onConsumerStatus: (s) => statuses.push(s.type),
      onMessage: ({ status }) => reports.push(status),
    });
    try {
      admin.sendToQueue(queue, Buffer.from('x'), { messageId: 'twice-1' });
      expect(await until(() => runs.length === 1, 10_000)).toBe(true);
      await admin.deleteQueue(queue);
      expect(await until(() => statuses.length === 2, 10_000)).toBe(true);
      admin.sendToQueue(queue, Buffer.from('x'), { messageId: 'twice-2' });
      expect(await until(() => runs.length === 2, 10_000)).toBe(true);
      await admin.deleteQueue(queue);
      expect(await until(() => statuses.length === 4, 10_000)).toBe(true);
      expect(statuses).toEqual(['lost', 'resumed', 'lost', 'resumed']);
      // Both cancelled channels still open for their runs.
      expect(made.slice(0, 2).map((c) => c.closed)).toEqual([false, false]);
      gate.open('twice-2');
      expect(await until(() => made[1]?.closed === true, 10_000)).toBe(true);
      expect(made[0]?.closed).toBe(false);
      gate.open('twice-1');
      expect(await until(() => made[0]?.closed === true, 10_000)).toBe(true);
      expect(reports).toEqual(['processed', 'processed']);
      expect(made.map((c) => c.acks).slice(0, 2)).toEqual([['twice-1'], ['twice-2']]);
      expect(made.flatMap((c) => c.errors)).toEqual([]);
    } finally {
      gate.openAll();
      await consumer.stop(5_000);
      await connection.close().catch(() => undefined);
    }
    expect(runs).toEqual(['twice-1', 'twice-2']);
  });

  it('stop() while a cancelled channel waits for a run that never ends and a reconnection is under way: resolves, every channel closed', {
    timeout: 60_000,
  }, async () => {
    const connection = await connectAmqp();
    connection.on('error', () => {});
    const queue = uniqueName('rev33a-cancel-stop');
    queues.push(queue);
    const admin = await connection.createChannel();
    await admin.assertQueue(queue);
    const { made, openChannel } = channels(connection, queue);
    let opens = 0;
    const runs: string[] = [];
    const statuses: string[] = [];
    const consumer = await consumeAmqp({
      store: createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}stop:` }),
      // The second opening (the reconnection) hangs until stop() gives it up.
      openChannel: async () => {
        opens += 1;
        if (opens === 2) await new Promise(() => {});
        return openChannel();
      },
      queue,
      reconnectDelayMs: 100,
      handler: async (message) => {
        runs.push(String(message.properties.messageId));
        return new Promise<string>(() => {}); // never settles
      },
      onConsumerStatus: (s) => statuses.push(s.type),
    });
    try {
      admin.sendToQueue(queue, Buffer.from('x'), { messageId: 'stop-1' });
      expect(await until(() => runs.length === 1, 10_000)).toBe(true);
      await admin.deleteQueue(queue);
      expect(await until(() => opens === 2, 10_000)).toBe(true);
      expect(statuses).toEqual(['lost']);
      await consumer.stop(500);
      expect(await until(() => made.every((c) => c.closed), 10_000)).toBe(true);
      expect(made.length).toBe(1);
      expect(await consumer.closed).toBeUndefined();
    } finally {
      await consumer.stop(1_000);
      await connection.close().catch(() => undefined);
    }
  });
});
