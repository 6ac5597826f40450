// rev31a (review of client31): a failure the policy keeps (`everythingFinal`) that cannot be
// stored is acked as `processed` because a not-recorded marker stands for it. The engine
// throws OUTCOME_NOT_RECORDED / OUTCOME_TOO_LARGE whether or not that marker landed: with the
// store frozen (SIGSTOP, by PID) while the marker is written, the delivery was acked with
// nothing recorded, and the lease then ran out: the failure is in no store, the message is
// gone, and the same message sent again runs the handler again. The delivery must go back
// (README: "the store failed after the handler ran": nack with requeue) and be settled by a
// redelivery once the store answers.
import { setTimeout as sleep } from 'node:timers/promises';
import { everythingFinal } from '@idem/core';
import { createRedisStore, recommendedRedisOptions } from '@idem/store-redis';
import { startPrivateRedis } from '@idem/test-ledger';
import type { ConsumeMessage } from 'amqplib';
import { Redis } from 'ioredis';
import { AckPolicy, type JsMsg } from 'nats';
import { describe, expect, it } from 'vitest';
import { consumeAmqp, consumeJetStream, type MessageStatus } from '../src/index.js';
import { amqpQueues, connectAmqp, jetStreamBed, recordedQueue, uniqueName } from './brokers.js';

const queues = amqpQueues();
const js = jetStreamBed('rev31a-unstored-js');
const codeOf = (error: unknown) => (error as { code?: unknown } | undefined)?.code;

const throwers: [string, () => unknown][] = [
  ['a null-prototype object (OUTCOME_NOT_RECORDED)', () => Object.create(null)],
  ['an Error past maxOutcomeBytes (OUTCOME_TOO_LARGE)', () => new Error('x'.repeat(64 * 1024))],
];

describe('rev31a: a kept failure whose marker write meets a frozen store, RabbitMQ', () => {
  it.each(throwers)(
    'handler throws %s while the store freezes: given back, never acked unrecorded',
    async (_name, make) => {
      const server = await startPrivateRedis();
      const client = new Redis(server.url, recommendedRedisOptions({ commandTimeoutMs: 200 }));
      client.on('error', () => {});
      const connection = await connectAmqp();
      let thawTimer: NodeJS.Timeout | undefined;
      try {
        const { admin, queue, channel, calls } = await recordedQueue(
          connection,
          queues,
          'rev31a-unstored',
        );
        let runs = 0;
        const reports: [MessageStatus, unknown][] = [];
        const consumer = await consumeAmqp<ConsumeMessage, string>({
          channel,
          queue,
          retryDelayMs: 100,
          storeTimeoutMs: 250,
          leaseMs: 1_000,
          isFinal: everythingFinal,
          maxOutcomeBytes: 16 * 1024,
          store: createRedisStore({ client, keyPrefix: `${uniqueName('rev31a')}:` }),
          handler: async () => {
            runs++;
            if (runs === 1) {
              // The store stops answering after the handler's acquisition, for longer than
              // the lease: whatever was queued for it meanwhile finds the lease gone.
              server.freeze();
              thawTimer = setTimeout(() => server.thaw(), 2_500);
            }
            throw make();
          },
          onMessage: (r) => reports.push([r.status, r.error]),
        });
        admin.sendToQueue(queue, Buffer.from('a'), { messageId: 'm1' });
        await admin.waitForConfirms();
        // Until the message is settled for good (an ack), the store back meanwhile.
        for (let i = 0; i < 500 && !calls.includes('ack'); i++) await sleep(20);
        const firstAck = calls.indexOf('ack');
        // The first delivery met the frozen store: given back, not acked as processed.
        expect(calls[0]).toBe('nack:true');
        expect(reports[0]?.[0]).toBe('failed');
        expect(firstAck).toBeGreaterThan(0);
        // Settled by a delivery that ran with the store up (a marker recorded) or replayed it.
        expect(reports[firstAck]?.[0]).toMatch(/^(processed|replayed)$/);
        if (reports[firstAck]?.[0] === 'processed')
          expect(codeOf(reports[firstAck]?.[1])).toMatch(/^OUTCOME_(NOT_RECORDED|TOO_LARGE)$/);
        const runsSettled = runs;
        // The same message again: the marker answers it, the handler does not run again.
        admin.sendToQueue(queue, Buffer.from('a'), { messageId: 'm1' });
        await admin.waitForConfirms();
        for (let i = 0; i < 200 && reports.length < firstAck + 2; i++) await sleep(20);
        await consumer.stop(2_000);
        expect(runs).toBe(runsSettled);
        expect(reports[firstAck + 1]?.[0]).toBe('replayed');
        expect((await admin.checkQueue(queue)).messageCount).toBe(0);
      } finally {
        clearTimeout(thawTimer);
        server.thaw();
        await connection.close().catch(() => undefined);
        client.disconnect();
        await server.stop();
      }
    },
    30_000,
  );
});

describe('rev31a: the same on JetStream', () => {
  it('handler throws a null-prototype object while the store freezes: nak, never acked unrecorded', async () => {
    const server = await startPrivateRedis();
    const client = new Redis(server.url, recommendedRedisOptions({ commandTimeoutMs: 200 }));
    client.on('error', () => {});
    let thawTimer: NodeJS.Timeout | undefined;
    try {
      const { jsm, name, js: jetstream } = await js.stream();
      await jsm.consumers.add(name, {
        durable_name: 'w',
        ack_policy: AckPolicy.Explicit,
        ack_wait: 30_000_000_000,
      });
      await jetstream.publish(`${name}.a`, 'x', { msgID: 'm1' });
      let runs = 0;
      const reports: [MessageStatus, unknown][] = [];
      const consumer = await consumeJetStream<JsMsg, string>({
        consumer: await jetstream.consumers.get(name, 'w'),
        retryDelayMs: 100,
        storeTimeoutMs: 250,
        leaseMs: 1_000,
        isFinal: everythingFinal,
        store: createRedisStore({ client, keyPrefix: `${uniqueName('rev31a-js')}:` }),
        handler: async () => {
          runs++;
          if (runs === 1) {
            server.freeze();
            thawTimer = setTimeout(() => server.thaw(), 2_500);
          }
          throw Object.create(null);
        },
        onMessage: (r) => reports.push([r.status, r.error]),
      });
      const settled = () => reports.some(([status]) => status !== 'failed');
      for (let i = 0; i < 500 && !settled(); i++) await sleep(20);
      await consumer.stop(2_000);
      // The delivery that met the frozen store was given back (nak), not acked as processed.
      expect(reports[0]?.[0]).toBe('failed');
      expect(codeOf(reports[0]?.[1])).not.toMatch(/^OUTCOME_/);
      // A later delivery settled it once the store answered: a marker recorded, or replayed.
      expect(reports.at(-1)?.[0]).toMatch(/^(processed|replayed)$/);
      const info = await jsm.consumers.info(name, 'w');
      expect(info.num_ack_pending + info.num_pending).toBe(0);
      // Settled by a redelivery: the first delivery was not the one acked.
      expect(reports.length).toBeGreaterThan(1);
    } finally {
      clearTimeout(thawTimer);
      server.thaw();
      client.disconnect();
      await server.stop();
    }
  }, 30_000);
});
