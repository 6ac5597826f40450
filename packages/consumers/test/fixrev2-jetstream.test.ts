import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidInputError } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { AckPolicy, headers, type NatsConnection } from 'nats';
import { afterAll, describe, expect, it } from 'vitest';
import { consumeJetStream, type MessageReport, messageProcessor } from '../src/index.js';
import { connectNats, uniqueName } from './brokers.js';

// fixrev2: light adversarial review of 36fd168 (bare term(), retryDelayMs bound).
describe('fixrev2: JetStream term and retryDelayMs', () => {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  const prefix = `${uniqueName('idem-fixrev2')}:`;
  const store = createRedisStore({ client: redis, keyPrefix: prefix });
  const streams: string[] = [];
  let nc: NatsConnection | undefined;
  afterAll(async () => {
    if (nc) {
      const jsm = await nc.jetstreamManager();
      for (const stream of streams) await jsm.streams.delete(stream).catch(() => {});
      await nc.close();
    }
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });
  const until = async (done: () => boolean | Promise<boolean>, ms: number) => {
    const deadline = performance.now() + ms;
    while (!(await done()) && performance.now() < deadline) await sleep(25);
  };
  const jetStream = async (ackWaitMs: number, maxDeliver = -1) => {
    nc ??= await connectNats();
    const stream = uniqueName('IDEM_FIXREV2').replace(/-/g, '_');
    streams.push(stream);
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({
      name: stream,
      subjects: [`${stream}.>`],
      duplicate_window: 100_000_000,
    });
    await jsm.consumers.add(stream, {
      durable_name: 'w',
      ack_policy: AckPolicy.Explicit,
      ack_wait: ackWaitMs * 1_000_000,
      max_deliver: maxDeliver,
    });
    const js = nc.jetstream();
    const publish = async (body: string, id: string) => {
      const h = headers();
      h.set('Nats-Msg-Id', id);
      return js.publish(`${stream}.orders`, body, { headers: h });
    };
    const info = () => jsm.consumers.info(stream, 'w');
    return { js, stream, publish, info };
  };

  it('held: retryDelayMs bounds at creation (0 and 2^31-1 taken; -1, NaN, 2^31, Infinity refused)', () => {
    const handler = async () => 'x';
    const source = {
      defaultKey: () => 'k',
      body: () => new Uint8Array(),
      defaultScope: () => ['fixrev2'],
    } as never;
    for (const ok of [0, 2 ** 31 - 1, 0.5])
      expect(() =>
        messageProcessor({ store, handler, retryDelayMs: ok } as never, source),
      ).not.toThrow();
    for (const bad of [-1, Number.NaN, 2 ** 31, Number.POSITIVE_INFINITY, '5'])
      expect(() =>
        messageProcessor({ store, handler, retryDelayMs: bad } as never, source),
      ).toThrow(InvalidInputError);
  });

  it('held: a rejected message is terminated with its reason reported, and not redelivered', async () => {
    const s = await jetStream(1_000);
    await s.publish('{"a":1}', 'fr2-1');
    await sleep(300);
    await s.publish('{"a":2}', 'fr2-1'); // another body under a recorded id
    let runs = 0;
    const reports: MessageReport<unknown>[] = [];
    const consumer = await consumeJetStream({
      store,
      consumer: await s.js.consumers.get(s.stream, 'w'),
      onMessage: (r) => reports.push(r),
      handler: async () => {
        runs += 1;
        return 'ok';
      },
    });
    await until(() => reports.length >= 2, 10_000);
    await sleep(2_500); // more than two ack_waits
    const info = await s.info();
    await consumer.stop(2_000);
    expect(runs).toBe(1);
    expect(reports.map((r) => r.status)).toEqual(['processed', 'rejected']);
    expect(reports[1]?.error).toBeDefined();
    expect(String(reports[1]?.error)).toMatch(/mismatch|fingerprint|another|different/i);
    expect(info.num_ack_pending + info.num_pending).toBe(0);
    expect(info.num_redelivered).toBe(0);
  });

  // FINDING (MEDIUM): retryDelayMs is validated as any finite number in [0, 2^31-1], but a
  // fractional one (e.g. 2000 / 3 ms, a computed value) becomes `-NAK {"delay":666666666.6666666}`
  // (nats.js nanos() is millis * 1e6, not rounded). nats-server 2.9.10 (this repo's) cannot
  // read a non-integer Go time.Duration, logs "bad NAK delay value" and treats it as a plain
  // NAK: the failed message is redelivered AT ONCE, a hot loop that burns max_deliver within
  // milliseconds (the exact outage the retryDelayMs bound of 36fd168 was meant to prevent).
  // Suggested fix: require an integer retryDelayMs (Number.isSafeInteger) or round the delay
  // (Math.ceil) before message.nak(), also for computed in-progress delays.
  // Fixed: the JetStream consumer rounds the delay up to whole milliseconds before nak().
  it('a fractional retryDelayMs (2000/3 ms) still delays the redelivery', async () => {
    const s = await jetStream(30_000, 20);
    await s.publish('{"a":1}', 'fr2-frac');
    let runs = 0;
    const consumer = await consumeJetStream({
      store,
      consumer: await s.js.consumers.get(s.stream, 'w'),
      retryDelayMs: 2000 / 3,
      handler: async () => {
        runs += 1;
        throw new Error('transient');
      },
    });
    await sleep(500); // less than one retry delay: one delivery only
    await consumer.stop(2_000);
    expect(runs).toBe(1);
  });

  it('held: control — an integer retryDelayMs of 667 delays the redelivery', async () => {
    const s = await jetStream(30_000, 20);
    await s.publish('{"a":1}', 'fr2-int');
    let runs = 0;
    const consumer = await consumeJetStream({
      store,
      consumer: await s.js.consumers.get(s.stream, 'w'),
      retryDelayMs: 667,
      handler: async () => {
        runs += 1;
        throw new Error('transient');
      },
    });
    await sleep(500);
    await consumer.stop(2_000);
    expect(runs).toBe(1);
  });
});
