import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import type { ChannelModel } from 'amqplib';
import { Redis } from 'ioredis';
import { AckPolicy, headers, type NatsConnection } from 'nats';
import { afterAll, describe, expect, it } from 'vitest';
import { consumeAmqp, consumeJetStream, type MessageStatus } from '../src/index.js';
import { connectAmqp, connectNats, uniqueName } from './brokers.js';

// Adversarial review (conrev): timer overflow of the retry delay, duplicates across two
// RabbitMQ connections, a JetStream publisher's resend outside the duplicate window.
describe('conrev attacks', () => {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  const prefix = `${uniqueName('idem-conrev')}:`;
  const store = createRedisStore({ client: redis, keyPrefix: prefix });
  const connections: ChannelModel[] = [];
  const queues: string[] = [];
  const streams: string[] = [];
  let nc: NatsConnection | undefined;
  afterAll(async () => {
    if (nc) {
      const jsm = await nc.jetstreamManager();
      for (const stream of streams) await jsm.streams.delete(stream).catch(() => {});
      await nc.close();
    }
    if (connections[0]) {
      const admin = await connections[0].createChannel();
      for (const queue of queues) await admin.deleteQueue(queue).catch(() => {});
    }
    for (const c of connections) await c.close().catch(() => {});
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });
  const until = async (done: () => boolean | Promise<boolean>, ms: number) => {
    const deadline = performance.now() + ms;
    while (!(await done()) && performance.now() < deadline) await sleep(25);
  };
  const connection = async () => {
    const c = await connectAmqp();
    c.on('error', () => {});
    connections.push(c);
    return c;
  };
  const newQueue = async () => {
    const c = connections[0] ?? (await connection());
    const queue = uniqueName('idem-conrev');
    queues.push(queue);
    const admin = await c.createChannel();
    await admin.assertQueue(queue, { durable: false });
    return { queue, admin };
  };

  // FINDING (LOW; fixed: retryDelayMs above 2^31-1 is refused at creation): `retryDelayMs` was checked to be finite and >= 0 but not bounded by
  // Node's longest timer: RabbitMQ holds a failed message with
  // `setTimeout(resolve, retryDelayMs)`, and a delay of 2^31 ms or more (e.g. "park it for a
  // month": 30 * 24 * 3600_000) overflows to 1 ms (TimeoutOverflowWarning), so a failing
  // (poison) message is requeued and run again in a hot loop instead of once a month.
  // (`maxHoldMs` and the in-progress delay are capped at 2^31-1; this one is not.)
  // Reproduce: consumeAmqp({ retryDelayMs: 2 ** 31, handler: () => { throw } }), publish one
  // message: hundreds of runs per second. Fix: refuse retryDelayMs > 2^31-1 with
  // InvalidInputError (or cap it / chain timers).
  it('RabbitMQ: a retryDelayMs beyond the longest timer does not requeue at once', async () => {
    const { queue, admin } = await newQueue();
    const channel = await (await connection()).createChannel();
    let runs = 0;
    let consumer: Awaited<ReturnType<typeof consumeAmqp>> | undefined;
    try {
      consumer = await consumeAmqp({
        store,
        channel,
        queue,
        retryDelayMs: 2 ** 31,
        handler: async () => {
          runs += 1;
          throw new Error('poison');
        },
      });
    } catch (error) {
      // Refused at creation with a typed error: the fix.
      expect((error as { code?: string }).code).toBe('INVALID_INPUT');
      runs = 1;
    }
    if (consumer) {
      admin.sendToQueue(queue, Buffer.from('{"x":1}'), { messageId: 'poison-1' });
      await sleep(1_000);
      await channel.close().catch(() => {}); // the held message goes back; no more runs
      await consumer.stop(200);
    }
    expect(runs).toBe(1);
  });

  // Held: 10 ids, each published 3 times, consumed by two consumers on two connections at
  // once: every handler runs exactly once per id (a duplicate in progress is held until the
  // holder's short lease passes, then replays), every copy is acked, the queue drains.
  it('RabbitMQ: duplicates across two connections run once per id and all drain', async () => {
    const { queue, admin } = await newQueue();
    const runs = new Map<string, number>();
    const statuses: MessageStatus[] = [];
    const consumers = [];
    for (let i = 0; i < 2; i++) {
      const channel = await (await connection()).createChannel();
      consumers.push(
        await consumeAmqp({
          store,
          channel,
          queue,
          prefetch: 5,
          leaseMs: 600,
          retryDelayMs: 50,
          onMessage: (r) => statuses.push(r.status),
          handler: async (message) => {
            const id = message.properties.messageId as string;
            runs.set(id, (runs.get(id) ?? 0) + 1);
            await sleep(150);
            return id;
          },
        }),
      );
    }
    for (let copy = 0; copy < 3; copy++)
      for (let i = 0; i < 10; i++)
        admin.sendToQueue(queue, Buffer.from(`{"n":${i}}`), { messageId: `dup-${i}` });
    const acked = () => statuses.filter((s) => s === 'processed' || s === 'replayed').length;
    await until(() => acked() >= 30, 15_000);
    for (const c of consumers) await c.stop(2_000);
    expect(acked()).toBe(30);
    expect(statuses.filter((s) => s === 'processed')).toHaveLength(10);
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    expect(runs.size).toBe(10);
    const { messageCount } = await admin.checkQueue(queue);
    expect(messageCount).toBe(0);
  });

  // Held: an 8 MiB body, published twice under one messageId: fingerprinted in bounded
  // time, the handler runs once, the copy is acked as a replay; a third copy with one byte
  // changed is rejected (nack without requeue), not run.
  it('RabbitMQ: an 8 MiB body runs once; its copy replays; a changed copy is rejected', async () => {
    const { queue, admin } = await newQueue();
    const channel = await (await connection()).createChannel();
    let runs = 0;
    const statuses: MessageStatus[] = [];
    const consumer = await consumeAmqp({
      store,
      channel,
      queue,
      prefetch: 1,
      onMessage: (r) => statuses.push(r.status),
      handler: async (message) => {
        runs += 1;
        return message.content.length;
      },
    });
    const big = Buffer.alloc(8 * 1024 * 1024, 0x61);
    admin.sendToQueue(queue, big, { messageId: 'big-1' });
    admin.sendToQueue(queue, big, { messageId: 'big-1' });
    const changed = Buffer.from(big);
    changed[changed.length - 1] = 0x62;
    admin.sendToQueue(queue, changed, { messageId: 'big-1' });
    await until(() => statuses.length >= 3, 15_000);
    await consumer.stop(2_000);
    expect(statuses).toEqual(['processed', 'replayed', 'rejected']);
    expect(runs).toBe(1);
    expect((await admin.checkQueue(queue)).messageCount).toBe(0);
  });

  const jetStream = async (ackWaitMs: number) => {
    nc ??= await connectNats();
    const stream = uniqueName('IDEM_CONREV').replace(/-/g, '_');
    streams.push(stream);
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({
      name: stream,
      subjects: [`${stream}.>`],
      duplicate_window: 100_000_000, // 100 ms
    });
    await jsm.consumers.add(stream, {
      durable_name: 'w',
      ack_policy: AckPolicy.Explicit,
      ack_wait: ackWaitMs * 1_000_000,
    });
    const js = nc.jetstream();
    const publish = async (body: string, id: string) => {
      const h = headers();
      h.set('Nats-Msg-Id', id);
      return js.publish(`${stream}.orders`, body, { headers: h });
    };
    // Acks are sent asynchronously: wait (bounded) until the server has them all.
    const settled = async (ms: number) => {
      const left = async () => {
        const info = await jsm.consumers.info(stream, 'w');
        return info.num_pending + info.num_ack_pending;
      };
      await until(async () => (await left()) === 0, ms);
      return left();
    };
    return { js, stream, publish, settled };
  };

  // Held: a JetStream publisher resends a message with the same Nats-Msg-Id after the
  // stream's duplicate window (the stream stores it twice): the copy is acked as a replay
  // and the handler ran once.
  it('JetStream: a resend outside the duplicate window is acked as a replay', async () => {
    const s = await jetStream(5_000);
    expect((await s.publish('{"amount":5}', 'order-77')).duplicate).toBe(false);
    expect((await s.publish('{"amount":5}', 'order-77')).duplicate).toBe(true); // in the window
    await sleep(300);
    expect((await s.publish('{"amount":5}', 'order-77')).duplicate).toBe(false); // stored again
    let runs = 0;
    const statuses: MessageStatus[] = [];
    const consumer = await consumeJetStream({
      store,
      consumer: await s.js.consumers.get(s.stream, 'w'),
      onMessage: (r) => statuses.push(r.status),
      handler: async () => {
        runs += 1;
        return 'billed';
      },
    });
    await until(() => statuses.length >= 2, 10_000);
    expect(await s.settled(3_000)).toBe(0);
    await consumer.stop(2_000);
    expect(statuses).toEqual(['processed', 'replayed']);
    expect(runs).toBe(1);
  });

  // FINDING (MEDIUM; fixed: a bare term(), the reason goes to onMessage only): a rejected JetStream message (another body under a recorded key, no
  // key, an invalid key) is never terminated on the nats-server this repo runs (v2.9.10):
  // consumeJetStream calls `message.term(String(error))`, and a `+TERM <reason>` ack body is
  // not understood by that server (reasons came with 2.10.x), so the message stays
  // ack-pending, comes back after every `ack_wait`, is rejected again, forever (or until
  // max_deliver, counted as failed deliveries, with advisories of max deliveries instead of
  // a terminated one). `term()` without a reason works on the same server. Reproduce:
  // consumer with ack_wait 1 s, publish id X body A (processed), then id X body B (after the
  // duplicate window): B is 'rejected' every second and num_ack_pending stays 1. Fix: call
  // `term()` without a reason unless the server (nc.info.version) supports one, and give the
  // reason to `onMessage` only.
  it('JetStream: a rejected message is terminated (not redelivered after ack_wait)', async () => {
    const s = await jetStream(1_000);
    await s.publish('{"amount":5}', 'order-88');
    await sleep(300);
    await s.publish('{"amount":6}', 'order-88'); // another body under the same id
    let runs = 0;
    const statuses: MessageStatus[] = [];
    const consumer = await consumeJetStream({
      store,
      consumer: await s.js.consumers.get(s.stream, 'w'),
      onMessage: (r) => statuses.push(r.status),
      handler: async () => {
        runs += 1;
        return 'billed';
      },
    });
    await until(() => statuses.length >= 2, 10_000);
    // Two ack_waits: a message not terminated comes back (and is rejected again) meanwhile.
    const left = await s.settled(2_500);
    await consumer.stop(2_000);
    expect(runs).toBe(1);
    expect(statuses).toEqual(['processed', 'rejected']);
    expect(left).toBe(0);
  });
});
