// client31: a failure the outcome policy keeps (`everythingFinal`) but the engine cannot store
// (a thrown value with no text, an error message past maxOutcomeBytes) leaves a marker that
// answers every redelivery; the delivery that ran the handler was given back all the same
// (nack with requeue / nak), spending a delivery of the broker's bound (a quorum queue's
// delivery-limit dead-letters it) for a redelivery acked as a replay. Now acked, `processed`,
// as a success that does not fit (README's table).
import { setTimeout as sleep } from 'node:timers/promises';
import { everythingFinal } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import type { ConsumeMessage } from 'amqplib';
import { AckPolicy, type JsMsg } from 'nats';
import { describe, expect, it } from 'vitest';
import { consumeAmqp, consumeJetStream, type MessageStatus } from '../src/index.js';
import { amqpQueues, connectAmqp, jetStreamBed, recordedQueue, redisBed } from './brokers.js';

const queues = amqpQueues();
const { redis, prefix } = redisBed('client31-unstored');
const js = jetStreamBed('client31-unstored-js');

const throwers: [string, () => unknown, string][] = [
  ['a null-prototype object (no text)', () => Object.create(null), 'OUTCOME_NOT_RECORDED'],
  [
    'an Error whose message is past maxOutcomeBytes',
    () => new Error('x'.repeat(64 * 1024)),
    'OUTCOME_TOO_LARGE',
  ],
];

const codeOf = (error: unknown) => (error as { code?: unknown } | undefined)?.code;

describe('client31: a kept failure that cannot be stored, RabbitMQ', () => {
  it.each(throwers)(
    'handler throws %s: acked once, processed, never run again',
    async (_name, make, code) => {
      const connection = await connectAmqp();
      try {
        const { admin, queue, channel, calls } = await recordedQueue(
          connection,
          queues,
          'client31-unstored',
        );
        let runs = 0;
        const reports: [MessageStatus, unknown][] = [];
        const consumer = await consumeAmqp<ConsumeMessage, string>({
          channel,
          queue,
          retryDelayMs: 50,
          isFinal: everythingFinal,
          maxOutcomeBytes: 16 * 1024,
          store: createRedisStore({ client: redis, keyPrefix: `${prefix}${queue}:` }),
          handler: async () => {
            runs++;
            throw make();
          },
          onMessage: (r) => reports.push([r.status, r.error]),
        });
        admin.sendToQueue(queue, Buffer.from('a'), { messageId: 'm1' });
        await admin.waitForConfirms();
        for (let i = 0; i < 200 && !calls.includes('ack'); i++) await sleep(20);
        // A redelivery, if one were coming, has had its retryDelayMs.
        await sleep(300);
        await consumer.stop(2_000);
        expect(runs).toBe(1);
        expect(calls).toEqual(['ack']);
        expect(reports.map(([status]) => status)).toEqual(['processed']);
        expect(codeOf(reports[0]?.[1])).toBe(code);
        expect((await admin.checkQueue(queue)).messageCount).toBe(0);
      } finally {
        await connection.close().catch(() => undefined);
      }
    },
  );
});

describe('client31: a kept failure that cannot be stored, JetStream', () => {
  it('handler throws a null-prototype object: acked once, processed, one delivery', async () => {
    const { jsm, name, js: client } = await js.stream();
    await jsm.consumers.add(name, {
      durable_name: 'w',
      ack_policy: AckPolicy.Explicit,
      ack_wait: 10_000_000_000,
    });
    await client.publish(`${name}.a`, 'x');
    let runs = 0;
    const reports: MessageStatus[] = [];
    const consumer = await consumeJetStream<JsMsg, string>({
      consumer: await client.consumers.get(name, 'w'),
      retryDelayMs: 50,
      isFinal: everythingFinal,
      store: createRedisStore({ client: js.redis, keyPrefix: js.prefix }),
      handler: async () => {
        runs++;
        throw Object.create(null);
      },
      onMessage: (r) => reports.push(r.status),
    });
    for (let i = 0; i < 200 && reports.length === 0; i++) await sleep(20);
    await sleep(300);
    await consumer.stop(2_000);
    const info = await jsm.consumers.info(name, 'w');
    expect(runs).toBe(1);
    expect(reports).toEqual(['processed']);
    expect(info.num_ack_pending + info.num_pending).toBe(0);
    expect(info.num_redelivered).toBe(0);
  });
});
