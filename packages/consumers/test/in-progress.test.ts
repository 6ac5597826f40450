import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { createFencedLedger, REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { AckPolicy, headers } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consumeAmqp, consumeJetStream, type MessageStatus } from '../src/index.js';
import { connectAmqp, connectNats, uniqueName } from './brokers.js';

// A redelivery that arrives while the first delivery still runs elsewhere: given back with a
// delay, never run a second time, never acked before the outcome is recorded.
describe('a duplicate delivered while the first is in progress', () => {
  let redis: Redis;
  const prefix = `${uniqueName('idem-consumers-ip')}:`;
  beforeAll(() => {
    redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  });
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  const setup = (name: string) => {
    const store = createRedisStore({ client: redis, keyPrefix: `${prefix}${name}:` });
    const ledger = createFencedLedger(redis, `${prefix}${name}:ledger:`);
    const statuses: MessageStatus[] = [];
    let runs = 0;
    const handler = async (id: string, fence: number, workMs: number) => {
      runs += 1;
      await sleep(workMs);
      await ledger.write(id, fence, 'done');
      return { id };
    };
    return { store, ledger, statuses, handler, runs: () => runs };
  };

  it('RabbitMQ: the first consumer loses its connection mid-message; the redelivery waits, then is acked as a replay', async () => {
    const t = setup('amqp');
    const first = await connectAmqp();
    const second = await connectAmqp();
    const queue = uniqueName('idem-test-ip');
    const admin = await second.createChannel();
    try {
      await admin.assertQueue(queue, { durable: false });
      const common = {
        store: t.store,
        queue,
        leaseMs: 3_000,
        retryDelayMs: 200,
        onMessage: (r: { status: MessageStatus }) => t.statuses.push(r.status),
      };
      let startedFirst!: () => void;
      const started = new Promise<void>((r) => {
        startedFirst = r;
      });
      await consumeAmqp({
        ...common,
        channel: await first.createChannel(),
        handler: async (message, ctx) => {
          startedFirst();
          return t.handler(String(message.properties.messageId), ctx.fence, 1_500);
        },
      });
      admin.sendToQueue(queue, Buffer.from('{"amount":1}'), { messageId: 'order-1' });
      await started;
      // The broker sees the first consumer die and delivers the message to the second.
      const second$ = await consumeAmqp({
        ...common,
        channel: await second.createChannel(),
        handler: (message, ctx) => t.handler(String(message.properties.messageId), ctx.fence, 10),
      });
      first.on('error', () => {}); // the destroyed connection reports it
      (
        first as unknown as { connection: { stream: { destroy(): void } } }
      ).connection.stream.destroy();
      const deadline = performance.now() + 20_000;
      while (!t.statuses.includes('replayed') && performance.now() < deadline) await sleep(50);
      await second$.stop(5_000);
      expect(t.statuses).toContain('in_progress');
      expect(t.statuses.filter((s) => s === 'processed')).toHaveLength(1);
      expect(t.statuses).toContain('replayed');
      expect(t.runs()).toBe(1);
      expect(await t.ledger.stats()).toEqual({ written: 1, replaced: 0, stale: 0 });
      expect((await admin.checkQueue(queue)).messageCount).toBe(0);
    } finally {
      await admin.deleteQueue(queue).catch(() => {});
      await second.close().catch(() => {});
      await t.ledger.drop();
    }
  });

  it('NATS: ack_wait passes while the handler runs; the redelivery is nak-ed with a delay; the handler runs once, the message is acked once recorded', async () => {
    const t = setup('nats');
    const nc = await connectNats();
    const stream = uniqueName('IDEM_TEST_IP').replace(/-/g, '_');
    const jsm = await nc.jetstreamManager();
    try {
      await jsm.streams.add({ name: stream, subjects: [`${stream}.x`] });
      await jsm.consumers.add(stream, {
        durable_name: 'w',
        ack_policy: AckPolicy.Explicit,
        ack_wait: 500_000_000, // 0.5 s, and no `working` (stubbed below): JetStream redelivers
        max_deliver: -1,
      });
      const js = nc.jetstream();
      const consumers = await Promise.all(
        [0, 1].map(async () =>
          consumeJetStream({
            store: t.store,
            consumer: await js.consumers.get(stream, 'w'),
            leaseMs: 3_000,
            retryDelayMs: 200,
            concurrency: 2,
            handler: (message, ctx) => {
              // The heartbeat does not reach the server (an event loop held up, a network
              // hiccup): ack_wait passes mid-handler. (This set workingIntervalMs past ack_wait,
              // refused at start since consumers32.)
              message.working = () => {};
              return t.handler(message.headers?.get('Nats-Msg-Id') ?? '', ctx.fence, 1_500);
            },
            onMessage: (r) => t.statuses.push(r.status),
          }),
        ),
      );
      const h = headers();
      h.set('Nats-Msg-Id', 'order-1');
      await js.publish(`${stream}.x`, '{"amount":1}', { headers: h });
      const pending = async () => {
        const info = await jsm.consumers.info(stream, 'w');
        return info.num_pending + info.num_ack_pending;
      };
      const deadline = performance.now() + 20_000;
      while (
        !(t.statuses.includes('processed') && (await pending()) === 0) &&
        performance.now() < deadline
      )
        await sleep(50);
      await Promise.all(consumers.map((c) => c.stop(5_000)));
      expect(t.statuses).toContain('in_progress');
      // Acked once recorded; copies given back meanwhile may come back (replayed) or, once
      // the first delivery's ack lands, never.
      expect(t.statuses.filter((s) => s === 'processed')).toHaveLength(1);
      expect(t.statuses.every((s) => ['in_progress', 'processed', 'replayed'].includes(s))).toBe(
        true,
      );
      expect(t.runs()).toBe(1);
      expect(await t.ledger.stats()).toEqual({ written: 1, replaced: 0, stale: 0 });
      expect(await pending()).toBe(0);
    } finally {
      await jsm.streams.delete(stream).catch(() => {});
      await nc.close();
      await t.ledger.drop();
    }
  });
});
