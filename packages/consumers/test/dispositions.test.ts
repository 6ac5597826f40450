import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidInputError } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type AmqpConsumerOptions,
  type AmqpMessageLike,
  consumeAmqp,
  type MessageStatus,
} from '../src/index.js';
import { connectAmqp, uniqueName } from './brokers.js';

// What each kind of message is told, on the real broker: a publisher's duplicate is acked
// as a replay, another body under a recorded key and a message without a key are rejected
// (not requeued), a failing handler's message is requeued and runs again.
describe('RabbitMQ dispositions', () => {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  const prefix = `${uniqueName('idem-consumers-disp')}:`;
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  type Seen = { id: string; status: MessageStatus; code?: string };
  type Options = Omit<AmqpConsumerOptions<AmqpMessageLike, unknown>, 'store' | 'channel' | 'queue'>;

  /**
   * Consumes a fresh queue, one message at a time, with `options`: sends `messages` (body,
   * messageId), stops once `reports` were reported (or after 15 s) and `settleMs` more, and
   * answers what each message was told and how many are left in the queue.
   */
  async function consume(
    options: Options,
    messages: Array<[body: string, messageId?: string]>,
    reports: number,
    settleMs = 0,
  ): Promise<{ seen: Seen[]; left: number }> {
    const connection = await connectAmqp();
    const queue = uniqueName('idem-test-disp');
    const channel = await connection.createConfirmChannel();
    try {
      await channel.assertQueue(queue, { durable: false });
      const seen: Seen[] = [];
      const consumer = await consumeAmqp({
        store: createRedisStore({ client: redis, keyPrefix: prefix }),
        channel: await connection.createChannel(),
        queue,
        prefetch: 1, // one at a time: the statuses come in publishing order
        retryDelayMs: 100,
        onMessage: (r) =>
          seen.push({
            id: String(r.message.properties.messageId),
            status: r.status,
            code: (r.error as { code?: string } | undefined)?.code,
          }),
        ...options,
      });
      for (const [body, messageId] of messages)
        channel.sendToQueue(queue, Buffer.from(body), messageId ? { messageId } : {});
      await channel.waitForConfirms();
      const deadline = performance.now() + 15_000;
      while (seen.length < reports && performance.now() < deadline) await sleep(25);
      await sleep(settleMs);
      await consumer.stop(5_000);
      // Every message acked or rejected: nothing left, nothing unacked.
      return { seen, left: (await channel.checkQueue(queue)).messageCount };
    } finally {
      await channel.deleteQueue(queue).catch(() => {});
      await connection.close().catch(() => {});
    }
  }

  /** How many times the handler ran, per messageId. */
  const counted = () => {
    const runs = new Map<string, number>();
    const run = (message: AmqpMessageLike) => {
      const id = String(message.properties.messageId);
      const n = (runs.get(id) ?? 0) + 1;
      runs.set(id, n);
      return { id, n };
    };
    return { runs, run };
  };

  it('replay, mismatch, no key, failure then success', async () => {
    const { runs, run } = counted();
    const { seen, left } = await consume(
      {
        handler: async (message) => {
          const { id, n } = run(message);
          if (id === 'flaky' && n === 1) throw new Error('downstream timeout');
          return { ok: id };
        },
      },
      [
        ['{"amount":1}', 'order-1'],
        ['{"amount":1}', 'order-1'], // the publisher's retry
        ['{"amount":2}', 'order-1'], // another body under the same key
        ['{"amount":3}'], // no messageId
        ['{"amount":4}', 'flaky'],
      ],
      6,
    );
    expect(seen).toEqual([
      { id: 'order-1', status: 'processed', code: undefined },
      { id: 'order-1', status: 'replayed', code: undefined },
      { id: 'order-1', status: 'rejected', code: 'MISMATCH' },
      { id: 'undefined', status: 'rejected', code: 'INVALID_INPUT' },
      { id: 'flaky', status: 'failed', code: undefined },
      { id: 'flaky', status: 'processed', code: undefined },
    ]);
    expect(Object.fromEntries(runs)).toEqual({ 'order-1': 1, flaky: 2 });
    expect(left).toBe(0);
  });

  // polrev review: an outcome policy that answers a Promise. FINDING (MEDIUM, fixed): a
  // Promise is truthy, so a handler's failure was recorded as final and its message acked:
  // never delivered again (and a rejecting policy went unhandled). Now the failed message is
  // given back and runs again; a success is kept and acked once, the fault (INVALID_INPUT)
  // reported; an async isFinal is refused when the consumer starts.
  it("an isFinal answering a Promise: a failed handler's message runs again, a success is acked once with INVALID_INPUT", async () => {
    const { runs, run } = counted();
    const { seen, left } = await consume(
      {
        isFinal: (settled) => Promise.resolve(settled.ok) as never,
        handler: async (message) => {
          const { id, n } = run(message);
          if (n === 1) throw new Error('downstream timeout');
          return { ok: id };
        },
      },
      [['{"amount":1}', 'order-1']],
      2,
      300, // a third delivery would show now
    );
    expect(seen).toEqual([
      { id: 'order-1', status: 'failed', code: 'INVALID_INPUT' },
      { id: 'order-1', status: 'processed', code: 'INVALID_INPUT' },
    ]);
    expect(Object.fromEntries(runs)).toEqual({ 'order-1': 2 });
    expect(left).toBe(0);
    const refused = await consume(
      { isFinal: (async () => true) as never, handler: async () => 'never' },
      [],
      0,
    ).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(InvalidInputError);
  });
});
