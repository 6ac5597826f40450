// consrev: a message whose key or payload function is still pending when the consumer stops
// (stop()'s bound passed) must be given back once that function settles, whatever it
// answers: the application closes what the function reads (a database) after stop(), and
// the function then fails. Before the fix such a failure rejected the message (nack without
// requeue / term: dropped without a dead-letter exchange) although its handler had never
// started and the consumer had stopped.
import { createRedisStore } from '@idem/store-redis';
import type { ConsumeMessage } from 'amqplib';
import { describe, expect, it } from 'vitest';
import { consumeAmqp, type MessageReport, messageProcessor } from '../src/index.js';
import { amqpQueues, connectAmqp, redisBed, uniqueName } from './brokers.js';
import { until } from './late-store.js';

interface Msg {
  id: string;
  body: string;
}

const { redis, prefix } = redisBed('consrev-stopped');
const store = () => createRedisStore({ client: redis, keyPrefix: prefix });
const queues = amqpQueues();

/** A function's answer the test gives when it likes. */
function pending<T>() {
  let settle!: { resolve: (value: T) => void; reject: (error: unknown) => void };
  const promise = new Promise<T>((resolve, reject) => {
    settle = { resolve, reject };
  });
  return { promise, ...settle };
}

describe('consrev: a key or payload function that settles once the processor is closed', () => {
  for (const [what, settles] of [
    ['key function rejects', { key: 'reject' }],
    ['key function answers undefined', { key: 'undefined' }],
    ['payload function rejects', { payload: 'reject' }],
  ] as const) {
    it(`${what}: given back (HANDLER_NOT_STARTED), never rejected`, async () => {
      const key = pending<string | undefined>();
      const body = pending<string>();
      const runs: string[] = [];
      const p = messageProcessor<Msg, unknown>(
        {
          store: store(),
          retryDelayMs: 50,
          handler: async (m) => {
            runs.push(m.body);
            return m.body;
          },
          key: () => ('key' in settles ? key.promise : uniqueName('k')),
          payload: () => ('payload' in settles ? body.promise : 'b'),
        },
        {
          defaultKey: (m) => m.id,
          body: (m) => new TextEncoder().encode(m.body),
          defaultScope: () => ['consrev', 'stopped'],
        },
      );
      const processing = p.process({ id: 'unused', body: 'b' });
      p.close();
      // The application closed what the function reads: it fails (or finds nothing).
      if ('key' in settles) {
        if (settles.key === 'reject') key.reject(new Error('connection closed'));
        else key.resolve(undefined);
      } else body.reject(new Error('connection closed'));
      const disposition = await processing;
      expect(disposition).toMatchObject({ action: 'retry', status: 'failed' });
      expect((disposition as { error: { code?: string } }).error.code).toBe('HANDLER_NOT_STARTED');
      expect(runs).toEqual([]);
    });
  }
});

describe('consrev: RabbitMQ, a key function still pending when stop() resolved', () => {
  it('fails once the application closed its database: the message is requeued, not dropped', async () => {
    const connection = await connectAmqp();
    try {
      const queue = uniqueName('consrev-stopped');
      queues.push(queue);
      const setup = await connection.createChannel();
      await setup.assertQueue(queue, { durable: false });
      const lookup = pending<string>();
      let asked = false;
      const first: string[] = [];
      const consumer = await consumeAmqp<ConsumeMessage, unknown>({
        channel: await connection.createChannel(),
        queue,
        store: store(),
        retryDelayMs: 50,
        // The key is looked up in the application's database.
        key: () => {
          asked = true;
          return lookup.promise;
        },
        handler: async () => 'first',
        onMessage: (r: MessageReport<ConsumeMessage>) => first.push(r.status),
      });
      setup.sendToQueue(queue, Buffer.from('a'), { messageId: uniqueName('m') });
      expect(await until(() => asked)).toBe(true);
      // stop()'s bound passes with the lookup pending; then the database is closed.
      await consumer.stop(100);
      lookup.reject(new Error('database connection closed'));
      expect(await until(() => first.length > 0)).toBe(true);
      expect(first).toEqual(['failed']);
      // Another consumer (a new instance) gets the message and processes it.
      const second: string[] = [];
      const other = await consumeAmqp<ConsumeMessage, unknown>({
        channel: await connection.createChannel(),
        queue,
        store: store(),
        retryDelayMs: 50,
        handler: async () => 'second',
        onMessage: (r: MessageReport<ConsumeMessage>) => second.push(r.status),
      });
      expect(await until(() => second.length > 0)).toBe(true);
      expect(second).toEqual(['processed']);
      await other.stop(2_000);
    } finally {
      await connection.close().catch(() => undefined);
    }
  });
});
