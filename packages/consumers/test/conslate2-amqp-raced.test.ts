// conslate2: on RabbitMQ, a delivery that races the stop (it comes once stop() was called,
// before the broker answered the cancel) and whose key function never settles (a lookup in a
// database that never answers) held even stop(Infinity) up to its `maxHoldMs` (an hour by
// default): the stop's give-back applied only to messages that had come before the stop() call.
// Now such a delivery is given back once the broker answered the cancel (HANDLER_NOT_STARTED);
// one whose key is at hand still reaches the store and runs, and stop() waits for it (as
// rev13fix-amqp-hold checks with a scripted channel).
import { createRedisStore } from '@idem/store-redis';
import type { ConsumeMessage } from 'amqplib';
import { describe, expect, it } from 'vitest';
import { consumeAmqp, type MessageReport } from '../src/index.js';
import { amqpQueues, connectAmqp, redisBed, secondAmqpRuns, uniqueName } from './brokers.js';
import { until } from './late-store.js';
import { within } from './silent-proxy.js';

const { redis, prefix } = redisBed('conslate2-amqp');
const queues = amqpQueues();
const store = () => createRedisStore({ client: redis, keyPrefix: prefix });

describe('conslate2: RabbitMQ, a delivery that races the cancel', () => {
  for (const keyAtHand of [false, true])
    it(keyAtHand
      ? 'its key at hand: the handler runs, stop(Infinity) waits for it, the message is acked'
      : 'its key function never settles: given back once the cancel is answered, stop(Infinity) returns (maxHoldMs 60 s); it runs once elsewhere', {
      timeout: 30_000,
    }, async () => {
      const connection = await connectAmqp();
      try {
        const publisher = await connection.createChannel();
        const queue = uniqueName('conslate2-raced');
        queues.push(queue);
        await publisher.assertQueue(queue, { durable: false });
        const asked: string[] = [];
        const runs: string[] = [];
        const seen: Array<[string, unknown]> = [];
        const channel = await connection.createChannel();
        // The delivery races the cancel: published once stop() was called, and delivered
        // (its key asked, or its handler started) before the cancel is sent.
        const racing = new Proxy(channel, {
          get(target, name, receiver) {
            if (name !== 'cancel') return Reflect.get(target, name, receiver);
            return async (tag: string) => {
              publisher.sendToQueue(queue, Buffer.from('raced'), { messageId: uniqueName('m') });
              await until(() => asked.length + runs.length > 0, 5_000);
              return target.cancel(tag);
            };
          },
        });
        const consumer = await consumeAmqp<ConsumeMessage, string>({
          channel: racing,
          queue,
          store: store(),
          maxHoldMs: 60_000,
          retryDelayMs: 50,
          ...(keyAtHand
            ? {}
            : {
                key: (message: ConsumeMessage) => {
                  asked.push(message.properties.messageId as string);
                  return new Promise<string>(() => {});
                },
              }),
          handler: async () => {
            runs.push('first');
            await new Promise((resolve) => setTimeout(resolve, 200));
            return 'first';
          },
          onMessage: (r: MessageReport<ConsumeMessage>) =>
            seen.push([r.status, (r.error as { code?: unknown } | undefined)?.code]),
        });
        // Before the fix: 'timeout' (the key function holds the message up to maxHoldMs).
        expect(await within(consumer.stop(Number.POSITIVE_INFINITY), 10_000)).not.toBe('timeout');
        expect(consumer.inFlight).toBe(0);
        if (keyAtHand) {
          expect([seen, runs]).toEqual([[['processed', undefined]], ['first']]);
          return;
        }
        expect([seen, runs, asked.length]).toEqual([[['failed', 'HANDLER_NOT_STARTED']], [], 1]);
        // Requeued: another consumer gets it and runs it once.
        expect(await secondAmqpRuns(connection, queue, store())).toEqual(['second']);
      } finally {
        await connection.close().catch(() => undefined);
      }
    });
});
