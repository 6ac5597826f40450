import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidInputError } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import {
  consumeAmqp,
  consumeJetStream,
  type MessageReport,
  messageProcessor,
} from '../src/index.js';
import { connectAmqp, durableStream, jetStreamBed, uniqueName } from './brokers.js';

// Attacks on today's change (a keyless message is rejected with InvalidInputError, not a
// TypeError), wt/todayrev2: on the real brokers the keyless message is still refused for good
// (RabbitMQ: nacked without requeue, dead-lettered; JetStream: term, never redelivered), its
// handler never runs, and the keyed messages around it are processed as before.

const waitFor = async (done: () => boolean, ms: number) => {
  const deadline = performance.now() + ms;
  while (!done() && performance.now() < deadline) await sleep(25);
};

const expectRejectedKeyless = (report: MessageReport<unknown> | undefined) => {
  expect(report?.status).toBe('rejected');
  expect(report?.error).toBeInstanceOf(InvalidInputError);
  expect((report?.error as InvalidInputError | undefined)?.code).toBe('INVALID_INPUT');
  expect(report?.error).not.toBeInstanceOf(TypeError);
};

describe('todayrev2: keyless messages on the real brokers', () => {
  const bed = jetStreamBed('todayrev2-keyless');
  const { redis, prefix, streams } = bed;

  it('RabbitMQ: a message without messageId is dead-lettered once (nack, no requeue), the next one processed', {
    timeout: 15_000,
  }, async () => {
    const connection = await connectAmqp();
    const queue = uniqueName('idem-test-todayrev2-keyless');
    const dead = `${queue}-dead`;
    const channel = await connection.createChannel();
    const reports: MessageReport<unknown>[] = [];
    let runs = 0;
    try {
      await channel.assertQueue(dead, { durable: false });
      await channel.assertQueue(queue, {
        durable: false,
        arguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': dead },
      });
      const consumer = await consumeAmqp({
        store: createRedisStore({ client: redis, keyPrefix: prefix }),
        channel: await connection.createChannel(),
        queue,
        prefetch: 1,
        retryDelayMs: 50,
        handler: async () => {
          runs += 1;
          return 'ok';
        },
        onMessage: (r) => reports.push(r as MessageReport<unknown>),
      });
      try {
        channel.sendToQueue(queue, Buffer.from('{"keyless":true}'));
        channel.sendToQueue(queue, Buffer.from('{}'), { messageId: 'todayrev2-keyed' });
        await waitFor(() => reports.length >= 2, 5_000);
        expectRejectedKeyless(reports[0]);
        expect(reports[1]?.status).toBe('processed');
        expect(runs).toBe(1);
      } finally {
        await consumer.stop(5_000);
      }
      // Dead-lettered exactly once: nacked without requeue, never redelivered to the queue.
      await sleep(200);
      expect((await channel.checkQueue(dead)).messageCount).toBe(1);
      expect((await channel.checkQueue(queue)).messageCount).toBe(0);
      expect(reports.map((r) => r.status)).toEqual(['rejected', 'processed']);
    } finally {
      await channel.deleteQueue(queue).catch(() => {});
      await channel.deleteQueue(dead).catch(() => {});
      await connection.close();
    }
  });

  it('NATS JetStream: a message whose key function gives "", null or undefined is terminated (no redelivery), the keyed ones processed', {
    timeout: 15_000,
  }, async () => {
    // Messages {"n":1}..{"n":4}: n=1 keys "", n=2 null, n=3 undefined, n=4 a key.
    const stream = await durableStream(bed.nc, 'TODAYREV2_KEYLESS', streams, {
      ackWaitMs: 1_000,
      count: 4,
    });
    const reports: MessageReport<unknown>[] = [];
    let runs = 0;
    const keys: Record<number, string | null | undefined> = { 1: '', 2: null, 3: undefined };
    const consumer = await consumeJetStream({
      store: createRedisStore({ client: redis, keyPrefix: prefix }),
      consumer: await bed.nc.jetstream().consumers.get(stream, 'w'),
      retryDelayMs: 50,
      key: (message) => {
        const n = (message.json() as { n: number }).n;
        return n in keys ? keys[n] : `todayrev2-${stream}-${n}`;
      },
      handler: async () => {
        runs += 1;
        return 'ok';
      },
      onMessage: (r) => reports.push(r as MessageReport<unknown>),
    });
    try {
      await waitFor(() => reports.length >= 4, 5_000);
      // Past ack_wait: a message nacked or left unacked would come back.
      await sleep(1_300);
    } finally {
      await consumer.stop(5_000);
    }
    const rejected = reports.filter((r) => r.status === 'rejected');
    expect([rejected.length, reports.length - rejected.length]).toEqual([3, 1]);
    for (const report of rejected) expectRejectedKeyless(report);
    expect(runs).toBe(1);
    const info = await (await bed.nc.jetstreamManager()).consumers.info(stream, 'w');
    expect([info.num_pending, info.num_ack_pending, info.num_redelivered]).toEqual([0, 0, 0]);
  });
});

describe('todayrev2: keyless messages on the shared processor (Redis store)', () => {
  const bed = { redis: new Redis(REDIS_URL, { maxRetriesPerRequest: 2 }) };
  const prefix = `${uniqueName('todayrev2-proc')}:`;
  afterAll(async () => {
    const keys = await bed.redis.keys(`${prefix}*`);
    if (keys.length > 0) await bed.redis.del(...keys);
    bed.redis.disconnect();
  });
  const processor = (key: (m: { k: unknown }) => unknown) => {
    let runs = 0;
    const p = messageProcessor<{ k: unknown }, unknown>(
      {
        store: createRedisStore({ client: bed.redis, keyPrefix: prefix }),
        key: key as never,
        payload: false,
        retryDelayMs: 50,
        handler: async () => {
          runs += 1;
          return 'ok';
        },
      },
      {
        defaultKey: () => undefined,
        body: () => new Uint8Array(),
        defaultScope: () => ['todayrev2', prefix],
      },
    );
    return { p, runs: () => runs };
  };

  it('an async key function resolving to undefined, null or "" is rejected (InvalidInputError), the handler never runs', async () => {
    const { p, runs } = processor(async (m) => m.k);
    for (const k of [undefined, null, '']) {
      const disposition = await p.process({ k });
      expect(disposition).toMatchObject({ action: 'reject', status: 'rejected' });
      expect(disposition.error).toBeInstanceOf(InvalidInputError);
    }
    expect(runs()).toBe(0);
  });

  it('falsy keys that are keys (0, false, " ") still run once then replay; a throwing key function is rejected with its own error', async () => {
    const { p, runs } = processor((m) => m.k);
    for (const k of [0, false, ' ']) {
      expect(await p.process({ k })).toMatchObject({ action: 'ack', status: 'processed' });
      expect(await p.process({ k })).toMatchObject({ action: 'ack', status: 'replayed' });
    }
    expect(runs()).toBe(3);
    const own = new Error('key lookup failed');
    const thrower = processor(() => {
      throw own;
    });
    const disposition = await thrower.p.process({ k: 'x' });
    expect([disposition.action, disposition.status, disposition.error]).toEqual([
      'reject',
      'rejected',
      own,
    ]);
  });
});
