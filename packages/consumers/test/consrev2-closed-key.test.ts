// consrev2: a message that reaches its processor once it is closed (a RabbitMQ delivery that
// came after stop() resolved, the broker's answer to the cancel not in yet: stop(0), a slow
// broker), or that is still waiting for its key function when the processor is closed without
// a stop signal (after the RabbitMQ race window, or the generic messageProcessor), was held up
// to its `maxHoldMs` (an hour by default) by a key function that never settles: unacked
// meanwhile (on a channel the application keeps open, no other consumer gets it) and its
// timer kept the process alive after the application closed everything. Now close() gives
// such a message back at once (HANDLER_NOT_STARTED), and one that comes after it is given back
// without its key function being called.

import { createRedisStore } from '@idem/store-redis';
import type { ConsumeMessage } from 'amqplib';
import { describe, expect, it } from 'vitest';
import { consumeAmqp, type MessageReport, messageProcessor } from '../src/index.js';
import { amqpQueues, connectAmqp, redisBed, secondAmqpRuns, uniqueName } from './brokers.js';
import { until } from './late-store.js';
import { within } from './silent-proxy.js';

interface Msg {
  id: string;
  body: string;
}

const { redis, prefix } = redisBed('consrev2-closed');
const queues = amqpQueues();
const store = () => createRedisStore({ client: redis, keyPrefix: prefix });
const codeOf = (error: unknown) => (error as { code?: unknown } | undefined)?.code;

describe('consrev2: messageProcessor, a key function pending at close() or a message after it', () => {
  it('given back at close(), and at once after it (its key function not called); maxHoldMs 60 s', async () => {
    let asked = 0;
    const runs: string[] = [];
    const p = messageProcessor<Msg, unknown>(
      {
        store: store(),
        maxHoldMs: 60_000,
        handler: async (m) => {
          runs.push(m.body);
          return m.body;
        },
        // Looked up in a database that never answers.
        key: () => {
          asked += 1;
          return new Promise<string>(() => {});
        },
      },
      {
        defaultKey: (m) => m.id,
        body: (m) => new TextEncoder().encode(m.body),
        defaultScope: () => ['consrev2', 'closed'],
      },
    );
    // No stop signal (the generic processor, or a delivery past the RabbitMQ race window).
    const waiting = p.process({ id: uniqueName('k'), body: 'before' });
    expect(await until(() => asked === 1)).toBe(true);
    p.close();
    // Before the fix: 'timeout' (held up to maxHoldMs).
    const before = await within(waiting, 5_000);
    expect(before).toMatchObject({ action: 'retry', status: 'failed' });
    expect(codeOf((before as { error?: unknown }).error)).toBe('HANDLER_NOT_STARTED');
    const after = await within(p.process({ id: uniqueName('k'), body: 'after' }), 5_000);
    expect(after).toMatchObject({ action: 'retry', status: 'failed' });
    expect(codeOf((after as { error?: unknown }).error)).toBe('HANDLER_NOT_STARTED');
    expect([asked, runs]).toEqual([1, []]);
  });
});

describe('consrev2: RabbitMQ, a delivery that comes after stop() resolved', () => {
  it('its key function never settles: given back at once (maxHoldMs 60 s), then it runs once elsewhere', {
    timeout: 30_000,
  }, async () => {
    const connection = await connectAmqp();
    try {
      const publisher = await connection.createChannel();
      const queue = uniqueName('consrev2-after');
      queues.push(queue);
      await publisher.assertQueue(queue, { durable: false });
      const channel = await connection.createChannel();
      // A broker slow to take the cancel: it is sent when the test says so, so stop(50)
      // gives up waiting for its answer and deliveries still come after stop() resolved.
      let sendCancel!: () => void;
      const cancelSent = new Promise<void>((resolve) => {
        sendCancel = resolve;
      });
      let cancelled: Promise<unknown> | undefined;
      const slow = new Proxy(channel, {
        get(target, name, receiver) {
          if (name !== 'cancel') return Reflect.get(target, name, receiver);
          return async (tag: string) => {
            await cancelSent;
            cancelled = target.cancel(tag);
            return cancelled;
          };
        },
      });
      let asked = 0;
      const runs: string[] = [];
      const seen: Array<[string, unknown]> = [];
      const consumer = await consumeAmqp<ConsumeMessage, string>({
        channel: slow,
        queue,
        store: store(),
        maxHoldMs: 60_000,
        key: () => {
          asked += 1;
          return new Promise<string>(() => {});
        },
        handler: async () => {
          runs.push('first');
          return 'first';
        },
        onMessage: (r: MessageReport<ConsumeMessage>) => seen.push([r.status, codeOf(r.error)]),
      });
      expect(await within(consumer.stop(50), 10_000)).not.toBe('timeout');
      publisher.sendToQueue(queue, Buffer.from('late'), { messageId: uniqueName('m') });
      // Before the fix: never within 10 s (the message held up to maxHoldMs, 60 s).
      expect(await until(() => seen.length > 0, 10_000)).toBe(true);
      // Requeued at once (redelivered to this consumer, and given back again, until the
      // cancel the test held is through); its key function never called, no handler run.
      sendCancel();
      expect(await until(() => cancelled !== undefined, 5_000)).toBe(true);
      await cancelled;
      expect(await until(() => consumer.inFlight === 0, 5_000)).toBe(true);
      expect(
        seen.every(([status, code]) => status === 'failed' && code === 'HANDLER_NOT_STARTED'),
      ).toBe(true);
      expect(runs).toEqual([]);
      // Another consumer gets it and runs it once.
      expect(await secondAmqpRuns(connection, queue, store())).toEqual(['second']);
      expect(asked).toBe(0);
    } finally {
      await connection.close().catch(() => undefined);
    }
  });
});
