// conrev24 review: attacks on the store wait of consumeAmqp (merge 740f6398) with the real
// RabbitMQ and a private redis-server killed / frozen by PID.
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore, recommendedRedisOptions } from '@idem/store-redis';
import { startPrivateRedis } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { AckPolicy } from 'nats';
import { describe, expect, it } from 'vitest';
import {
  type AmqpMessageLike,
  consumeAmqp,
  consumeJetStream,
  type MessageStatus,
} from '../src/index.js';
import { connectAmqp, jetStreamBed, uniqueName } from './brokers.js';

const js = jetStreamBed('conrev24-js');

async function until(done: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await done()) && performance.now() < deadline) await sleep(20);
}

/** A private Redis, a queue, and a channel wrapper that counts the acks / nacks per message. */
async function bed(name: string, leaseMs = 30_000) {
  const server = await startPrivateRedis();
  const client = new Redis(server.url, recommendedRedisOptions({ commandTimeoutMs: 250 }));
  client.on('error', () => {});
  const connection = await connectAmqp();
  const queue = uniqueName(name);
  const admin = await connection.createConfirmChannel();
  await admin.assertQueue(queue, { durable: false });
  const calls: string[] = [];
  const runs = new Map<string, number>();
  const statuses: MessageStatus[] = [];
  const errors: unknown[] = [];
  const id = (m: AmqpMessageLike) => String(m.properties.messageId);
  const counted = async () => {
    const channel = await connection.createChannel();
    const ack = channel.ack.bind(channel);
    const nack = channel.nack.bind(channel);
    channel.ack = ((m: AmqpMessageLike) => {
      calls.push(`ack:${id(m)}`);
      ack(m as never);
    }) as never;
    channel.nack = ((m: AmqpMessageLike, all?: boolean, requeue?: boolean) => {
      calls.push(`nack:${id(m)}`);
      nack(m as never, all, requeue);
    }) as never;
    return channel;
  };
  const options = {
    store: createRedisStore({ client, keyPrefix: `${queue}:` }),
    queue,
    storeTimeoutMs: 300,
    retryDelayMs: 100,
    leaseMs,
    handler: async (m: AmqpMessageLike) => {
      runs.set(id(m), (runs.get(id(m)) ?? 0) + 1);
      return id(m);
    },
    onMessage: (r: { status: MessageStatus; error?: unknown }) => {
      statuses.push(r.status);
      if (r.error !== undefined) errors.push(r.error);
    },
  };
  const send = async (n: number) => {
    for (let i = 0; i < n; i++)
      admin.sendToQueue(queue, Buffer.from(`{"n":${i}}`), { messageId: `m-${i}` });
    await admin.waitForConfirms();
  };
  const left = async () => (await admin.checkQueue(queue)).messageCount;
  const close = async () => {
    server.thaw();
    await admin.deleteQueue(queue).catch(() => {});
    await connection.close().catch(() => {});
    client.disconnect();
    await server.stop();
  };
  return { server, connection, counted, options, send, left, close, calls, runs, statuses, errors };
}

describe('conrev24: the store wait of consumeAmqp', () => {
  // FIXED (was FINDING LOW, a needless warning on the user's stderr): more than 10 messages
  // waiting for the store at once (prefetch or concurrency above 10) each added an abort
  // listener to the consumer's one stop signal, and Node printed "MaxListenersExceededWarning:
  // Possible EventTarget memory leak detected" (no leak: each is removed when its wait ends).
  it('20 messages waiting at once (prefetch 20, store killed): stop() gives each back exactly once, no leak warning', async () => {
    const b = await bed('conrev24-many');
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      const consumer = await consumeAmqp({
        ...b.options,
        prefetch: 20,
        channel: await b.counted(),
      });
      await b.server.stop();
      await b.send(20);
      await until(() => consumer.inFlight === 20);
      await sleep(600); // several tries each
      expect(b.calls).toEqual([]);
      await consumer.stop(10_000);
      const callsAtStop = b.calls.length;
      expect(consumer.inFlight).toBe(0);
      expect(b.calls.filter((c) => c.startsWith('ack'))).toEqual([]);
      expect(new Set(b.calls).size).toBe(20);
      expect(b.calls.length).toBe(20);
      expect(b.statuses).toEqual(Array(20).fill('failed'));
      expect([...b.runs.values()]).toEqual([]);
      await until(async () => (await b.left()) === 20, 5_000);
      expect(await b.left()).toBe(20);
      await sleep(500);
      expect(b.calls.length).toBe(callsAtStop);
      expect(warnings.filter((n) => n === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      await b.close();
    }
  });

  it('store frozen, stop() while a try is under way, then thawed: given back or done exactly once', async () => {
    const b = await bed('conrev24-frozen-stop');
    try {
      const consumer = await consumeAmqp({ ...b.options, prefetch: 5, channel: await b.counted() });
      b.server.freeze();
      await b.send(5);
      await until(() => consumer.inFlight === 5);
      await sleep(400);
      const stopped = consumer.stop(10_000);
      b.server.thaw();
      await stopped;
      const after = b.calls.length;
      expect(consumer.inFlight).toBe(0);
      // Each message: exactly one broker call, one report.
      expect(b.calls.length).toBe(5);
      expect(new Set(b.calls.map((c) => c.split(':')[1])).size).toBe(5);
      expect(b.statuses.length).toBe(5);
      // What ran was acked (processed), what did not was given back.
      const acked = b.calls.filter((c) => c.startsWith('ack')).map((c) => c.slice(4));
      expect(acked.sort()).toEqual([...b.runs.keys()].sort());
      expect([...b.runs.values()].every((n) => n === 1)).toBe(true);
      await sleep(500);
      expect(b.calls.length).toBe(after);
    } finally {
      await b.close();
    }
  });

  it('channel closed during the wait; another consumer takes the message: it runs once, the first consumer drains', async () => {
    const b = await bed('conrev24-closed', 2_000);
    try {
      const channel = await b.counted();
      const first = await consumeAmqp({ ...b.options, channel });
      await b.server.stop();
      await b.send(3);
      await until(() => first.inFlight === 3);
      await channel.close(); // the broker requeues the 3
      const second = await consumeAmqp({ ...b.options, channel: await b.counted() });
      await sleep(300);
      await b.server.start();
      await until(
        async () => b.runs.size === 3 && (await b.left()) === 0 && second.inFlight === 0,
        20_000,
      );
      // The first consumer's waits end within about a lease.
      await until(() => first.inFlight === 0, 5_000);
      expect(first.inFlight).toBe(0);
      expect([...b.runs.values()]).toEqual([1, 1, 1]);
      expect(await b.left()).toBe(0);
      await second.stop(2_000);
      await first.stop(1_000);
    } finally {
      await b.close();
    }
  });

  // FIXED (was FINDING HIGH, the handler ran twice): an isFinal that throws of a success (a bug
  // in the policy) made the engine leave the key to its lease and the consumer give the
  // message back; its redelivery, once the lease passed, ran the handler a second time. Repro:
  // leaseMs 1000, an isFinal that throws on its first call: runs [2], statuses failed,
  // in_progress, processed. Now the success is kept: acked once, the policy's error reported.
  it('an isFinal that throws of a success: the outcome is kept, acked once, the handler not run again', async () => {
    const b = await bed('conrev24-isfinal-throws', 1_000);
    try {
      let calls = 0;
      const consumer = await consumeAmqp({
        ...b.options,
        channel: await b.counted(),
        isFinal: (s: { ok: boolean }) => {
          calls += 1;
          if (calls === 1) throw new Error('policy bug');
          return s.ok;
        },
      });
      await b.send(1);
      await until(async () => b.statuses.includes('processed') && consumer.inFlight === 0, 10_000);
      await sleep(1_500); // past the lease: a redelivery would run it again now
      await consumer.stop(2_000);
      expect([...b.runs.values()]).toEqual([1]);
      expect(b.statuses).toEqual(['processed']);
      expect(b.calls).toEqual(['ack:m-0']);
      expect(b.errors.map((e) => (e as Error).message)).toEqual(['policy bug']);
      expect(await b.left()).toBe(0);
    } finally {
      await b.close();
    }
  });
});

describe('conrev24: the store wait of consumeJetStream', () => {
  // FIXED (was FINDING LOW): as on RabbitMQ, concurrency 20 with 20 messages waiting for the
  // store printed a MaxListenersExceededWarning.
  it('concurrency 20, 20 messages waiting (store killed): stop() gives each back once, no leak warning', async () => {
    const server = await startPrivateRedis();
    const client = new Redis(server.url, recommendedRedisOptions({ commandTimeoutMs: 250 }));
    client.on('error', () => {});
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    const statuses: MessageStatus[] = [];
    let runs = 0;
    try {
      const { jsm, js: jsc, name } = await js.stream();
      await jsm.consumers.add(name, {
        durable_name: 'w',
        ack_policy: AckPolicy.Explicit,
        ack_wait: 30_000_000_000,
      });
      const consumer = await consumeJetStream({
        consumer: (await jsc.consumers.get(name, 'w')) as never,
        concurrency: 20,
        store: createRedisStore({ client, keyPrefix: `${name}:` }),
        storeTimeoutMs: 300,
        retryDelayMs: 100,
        handler: async () => {
          runs += 1;
          return 'ok';
        },
        onMessage: (r) => statuses.push(r.status),
      });
      await server.stop();
      for (let i = 0; i < 20; i++) await jsc.publish(`${name}.orders`, `{"n":${i}}`);
      await until(() => consumer.inFlight === 20);
      await sleep(600);
      await consumer.stop(10_000);
      expect(consumer.inFlight).toBe(0);
      expect(runs).toBe(0);
      expect(statuses).toEqual(Array(20).fill('failed'));
      expect(warnings.filter((n) => n === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      client.disconnect();
      await server.stop();
    }
  });
});
