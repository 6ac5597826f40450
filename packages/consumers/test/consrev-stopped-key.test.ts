// consrev: a message whose key or payload function is still pending when the consumer stops
// (stop()'s bound passed) must be given back once that function settles, whatever it
// answers: the application closes what the function reads (a database) after stop(), and
// the function then fails. Before the fix such a failure rejected the message (nack without
// requeue / term: dropped without a dead-letter exchange) although its handler had never
// started and the consumer had stopped. And a consumer's stop() (even stop(Infinity)) no
// longer waits up to `maxHoldMs` for a key function that never settles: a message that has
// not reached the store is given back at the stop.
import { createRedisStore } from '@idem/store-redis';
import type { ConsumeMessage } from 'amqplib';
import type { JsMsg } from 'nats';
import { describe, expect, it } from 'vitest';
import {
  consumeAmqp,
  consumeJetStream,
  type IdempotentConsumer,
  type MessageReport,
  messageProcessor,
} from '../src/index.js';
import {
  amqpQueues,
  connectAmqp,
  connectNats,
  durableStream,
  redisBed,
  uniqueName,
} from './brokers.js';
import { lateAcquires, until } from './late-store.js';
import { within } from './silent-proxy.js';

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

describe('consrev: the consumer stops while a message has not reached the store', () => {
  it('process(bounds.signal): a key function still pending is given back at the abort, one whose acquisition was sent runs', async () => {
    const { store: late, log } = lateAcquires(store(), 300, (n) => n === 1);
    const runs: string[] = [];
    const p = messageProcessor<Msg, unknown>(
      {
        store: late,
        retryDelayMs: 50,
        handler: async (m) => {
          runs.push(m.body);
          return m.body;
        },
        // 'hang' is looked up in a database that never answers.
        key: (m) => (m.body === 'hang' ? new Promise<string>(() => {}) : m.id),
      },
      {
        defaultKey: (m) => m.id,
        body: (m) => new TextEncoder().encode(m.body),
        defaultScope: () => ['consrev', 'signal'],
      },
    );
    const stopping = new AbortController();
    const hanging = p.process({ id: uniqueName('k'), body: 'hang' }, { signal: stopping.signal });
    const sent = p.process({ id: uniqueName('k'), body: 'sent' }, { signal: stopping.signal });
    expect(await until(() => log.acquires === 1)).toBe(true);
    stopping.abort();
    const given = await within(hanging, 2_000);
    expect(given).toMatchObject({ action: 'retry', status: 'failed' });
    expect((given as { error: { code?: string } }).error.code).toBe('HANDLER_NOT_STARTED');
    // The acquisition sent before the stop is answered (late) and its handler runs.
    expect(await sent).toMatchObject({ action: 'ack', status: 'processed' });
    expect([log.acquires, runs]).toEqual([1, ['sent']]);
  });

  for (const [name, open] of [
    ['RabbitMQ', rabbitBench],
    ['NATS JetStream', jetStreamBench],
  ] as const) {
    it(`${name}: stop(Infinity) with a key function that never settles returns (maxHoldMs 60 s); the message runs once elsewhere`, async () => {
      const bench = await open();
      try {
        let asked = false;
        const first: unknown[] = [];
        const consumer = await bench.start({
          maxHoldMs: 60_000,
          key: () => {
            asked = true;
            return new Promise<string>(() => {});
          },
          onMessage: (r: MessageReport<unknown>) =>
            first.push((r.error as { code?: unknown } | undefined)?.code),
        });
        await bench.publish();
        expect(await until(() => asked)).toBe(true);
        // Before the fix stop(Infinity) waited for the key function up to maxHoldMs.
        expect(await within(consumer.stop(Number.POSITIVE_INFINITY), 5_000)).not.toBe('timeout');
        expect(first).toEqual(['HANDLER_NOT_STARTED']);
        const runs: string[] = [];
        const statuses: string[] = [];
        const other = await bench.start({
          handler: async () => {
            runs.push('second');
            return 'second';
          },
          onMessage: (r: MessageReport<unknown>) => statuses.push(r.status),
        });
        expect(await until(() => statuses.length > 0)).toBe(true);
        await other.stop(2_000);
        expect([statuses, runs]).toEqual([['processed'], ['second']]);
      } finally {
        await bench.close();
      }
    });
  }
});

/** A broker with one message to consume and consumers started on it. */
interface Bench {
  start(options: object): Promise<IdempotentConsumer>;
  publish(): Promise<void>;
  close(): Promise<void>;
}

async function rabbitBench(): Promise<Bench> {
  const connection = await connectAmqp();
  const setup = await connection.createChannel();
  const queue = uniqueName('consrev-stop');
  queues.push(queue);
  await setup.assertQueue(queue, { durable: false });
  return {
    start: async (options) =>
      consumeAmqp<ConsumeMessage, unknown>({
        channel: await connection.createChannel(),
        queue,
        store: store(),
        retryDelayMs: 50,
        handler: async () => 'ok',
        ...options,
      }),
    publish: async () => {
      setup.sendToQueue(queue, Buffer.from('a'), { messageId: uniqueName('m') });
    },
    close: () => connection.close().catch(() => undefined),
  };
}

async function jetStreamBench(): Promise<Bench> {
  const nc = await connectNats();
  const streams: string[] = [];
  const stream = await durableStream(nc, 'consrev', streams, { ackWaitMs: 10_000, count: 0 });
  return {
    start: async (options) =>
      consumeJetStream<JsMsg, unknown>({
        consumer: await nc.jetstream().consumers.get(stream, 'w'),
        store: store(),
        retryDelayMs: 50,
        handler: async () => 'ok',
        ...options,
      }),
    publish: async () => {
      await nc.jetstream().publish(`${stream}.orders`, '{"n":1}');
    },
    close: async () => {
      await (await nc.jetstreamManager()).streams.delete(stream).catch(() => undefined);
      await nc.close();
    },
  };
}
