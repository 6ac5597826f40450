// ccrev review: attacks on consumeAmqp / consumeJetStream with the real RabbitMQ, NATS
// JetStream and Redis on loopback. Findings that were fixed say FIXED (was FINDING ...).
import { setTimeout as sleep } from 'node:timers/promises';
import { everythingFinal, isIdemError } from '@idem/core';
import { createRedisStore, recommendedRedisOptions } from '@idem/store-redis';
import { REDIS_URL, startPrivateRedis } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { AckPolicy } from 'nats';
import { afterAll, describe, expect, it } from 'vitest';
import { consumeAmqp, consumeJetStream, type MessageStatus } from '../src/index.js';
import { connectAmqp, jetStreamBed, uniqueName } from './brokers.js';

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
const prefix = `${uniqueName('ccrev-consumers')}:`;
const store = () => createRedisStore({ client: redis, keyPrefix: prefix });
afterAll(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});
const bed = jetStreamBed('ccrev-consumers-js');

/** Waits until `done()` holds, `ms` at most (the assertion after it then fails). */
async function until(done: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await done()) && performance.now() < deadline) await sleep(20);
}

/** A RabbitMQ queue (deleted by `close`) and a confirm channel that sends to it. */
async function amqpQueue(prefixName: string, options: Record<string, unknown>) {
  const connection = await connectAmqp();
  const queue = uniqueName(prefixName);
  const admin = await connection.createConfirmChannel();
  await admin.assertQueue(queue, options);
  return {
    queue,
    channel: () => connection.createChannel(),
    send: async (messageId: string | undefined, body = '{"n":1}') => {
      admin.sendToQueue(queue, Buffer.from(body), { messageId, persistent: true });
      await admin.waitForConfirms();
    },
    left: async () => (await admin.checkQueue(queue)).messageCount,
    close: async () => {
      await admin.deleteQueue(queue).catch(() => {});
      await connection.close().catch(() => {});
    },
  };
}

/** What starting a consumer threw (`undefined` if it started: it is stopped then). */
const startError = (start: Promise<{ stop(timeoutMs?: number): Promise<void> }>) =>
  start.then(
    async (c) => {
      await c.stop(1_000);
      return undefined;
    },
    (e: unknown) => e,
  );

describe('ccrev consumers: the outcome policy (isFinal)', () => {
  // FIXED (was FINDING MEDIUM, lost message): with an `isFinal` that does not keep a success
  // (e.g. `(s) => s.ok && s.value.status !== 'retry'`), the engine releases the key for a retry
  // and the consumer still acked the message and reported `processed`: no outcome was
  // recorded and the broker never delivered it again. Repro: consumeAmqp with such an isFinal,
  // a handler that answers { status: 'retry' } once: it ran once, the message was gone.
  it('RabbitMQ: a success the policy does not keep is given back and runs again, not acked', async () => {
    const q = await amqpQueue('ccrev-notfinal', { durable: false });
    try {
      let runs = 0;
      const seen: MessageStatus[] = [];
      const consumer = await consumeAmqp({
        store: store(),
        channel: await q.channel(),
        queue: q.queue,
        retryDelayMs: 50,
        isFinal: (s) => s.ok && (s.value as { status: string }).status !== 'retry',
        handler: async () => {
          runs += 1;
          return { status: runs === 1 ? 'retry' : 'done' };
        },
        onMessage: (r) => seen.push(r.status),
      });
      await q.send('nf-1');
      await until(() => seen.includes('processed'));
      await consumer.stop(5_000);
      expect(runs).toBe(2);
      expect(seen).toEqual(['failed', 'processed']);
      expect(await q.left()).toBe(0);
    } finally {
      await q.close();
    }
  });

  // Held: the verdict goes to the message whose execution it judged, with many at once.
  it('RabbitMQ: 20 messages at once, every other one not kept on its first run: each verdict reaches its own message', async () => {
    const q = await amqpQueue('ccrev-notfinal-many', { durable: false });
    try {
      const runs = new Map<string, number>();
      const seen: { id: string; status: MessageStatus }[] = [];
      const consumer = await consumeAmqp({
        store: store(),
        channel: await q.channel(),
        queue: q.queue,
        prefetch: 20,
        retryDelayMs: 50,
        isFinal: (s) => s.ok && (s.value as { status: string }).status !== 'retry',
        handler: async (m) => {
          const id = String(m.properties.messageId);
          const n = (runs.get(id) ?? 0) + 1;
          runs.set(id, n);
          await sleep(Math.floor(Math.random() * 30)); // interleaved verdicts
          return { status: n === 1 && Number(id.slice(2)) % 2 === 1 ? 'retry' : 'done' };
        },
        onMessage: (r) =>
          seen.push({ id: String(r.message.properties.messageId), status: r.status }),
      });
      for (let i = 0; i < 20; i++) await q.send(`m-${i}`);
      await until(() => seen.filter((x) => x.status === 'processed').length === 20);
      await consumer.stop(5_000);
      for (let i = 0; i < 20; i++) {
        const mine = seen.filter((x) => x.id === `m-${i}`).map((x) => x.status);
        expect({ id: i, runs: runs.get(`m-${i}`), mine }).toEqual({
          id: i,
          runs: i % 2 === 1 ? 2 : 1,
          mine: i % 2 === 1 ? ['failed', 'processed'] : ['processed'],
        });
      }
      expect(await q.left()).toBe(0);
    } finally {
      await q.close();
    }
  });

  // FIXED (was FINDING LOW): under a policy that records failures (everythingFinal, Stripe's),
  // the delivery whose handler threw, and whose failure was recorded, was nacked and requeued
  // as `failed`: a recorded message went back to the broker (a delivery of a quorum queue's
  // delivery-limit, or JetStream's max_deliver, spent for nothing) only to be acked as a replay.
  it('RabbitMQ: a failure the policy records is acked at once (processed, with its error)', async () => {
    const q = await amqpQueue('ccrev-failfinal', { durable: false });
    try {
      let runs = 0;
      const seen: { status: MessageStatus; error?: unknown }[] = [];
      const consumer = await consumeAmqp({
        store: store(),
        channel: await q.channel(),
        queue: q.queue,
        retryDelayMs: 50,
        isFinal: everythingFinal,
        handler: async () => {
          runs += 1;
          throw new Error('card declined');
        },
        onMessage: (r) => seen.push({ status: r.status, error: r.error }),
      });
      await q.send('ff-1');
      await until(() => seen.length >= 1);
      await sleep(300); // a requeued copy would come back within retryDelayMs
      await consumer.stop(5_000);
      expect(runs).toBe(1);
      expect(seen.map((s) => s.status)).toEqual(['processed']);
      expect(seen[0]?.error).toMatchObject({ message: 'card declined' });
      expect(await q.left()).toBe(0);
    } finally {
      await q.close();
    }
  });
});

describe('ccrev consumers: scope null', () => {
  // FIXED (was FINDING MEDIUM, isolation): `scope: null` (a config field left empty) passed the
  // "queue '' needs an explicit scope" check, then `scope ?? default` used ['amqp', ''] for
  // every server-named queue: two instances' own queues shared one key space again.
  it("RabbitMQ: queue '' with scope null is refused like queue '' without a scope", async () => {
    const connection = await connectAmqp();
    try {
      const channel = await connection.createChannel();
      await channel.assertQueue('', { exclusive: true });
      const error = await startError(
        consumeAmqp({ store: store(), channel, queue: '', scope: null, handler: async () => 'ok' }),
      );
      expect(isIdemError(error, 'INVALID_INPUT')).toBe(true);
    } finally {
      await connection.close();
    }
  });

  // FIXED (was FINDING MEDIUM, exactly-once): an ordered consumer with `scope: null` was taken
  // (the check reads `scope === undefined`) with the default scope holding its random name:
  // a restarted process ran every message of the stream again.
  it('JetStream: an ordered consumer with scope null is refused like one without a scope', async () => {
    const { js, name } = await bed.stream();
    const ordered = await js.consumers.get(name);
    await expect(
      consumeJetStream({
        consumer: ordered as never,
        store: store(),
        scope: null,
        handler: async () => 'ok',
      }),
    ).rejects.toThrow(/explicit scope/);
  });
});

describe('ccrev consumers: option names', () => {
  // FIXED (was FINDING LOW): a misspelt option took its default without a word (@idem/client
  // and @idem/http refuse them): `scopes: [...]` kept the default scope (two vhosts' queues of
  // one name sharing keys, the very thing the user set out to avoid), `retryDelay: 60_000` left
  // a poison message requeued every second. `wait` (not an option of the consumers) made a
  // duplicate hold its slot.
  it.each([
    ['scopes', ['vhost-a', 'invoices']],
    ['retryDelay', 60_000],
    ['prefetchCount', 5],
    ['wait', { timeoutMs: 1_000 }],
  ])('RabbitMQ: %s is refused at creation, naming it', async (name, value) => {
    const connection = await connectAmqp();
    try {
      const queue = uniqueName('ccrev-names');
      const channel = await connection.createChannel();
      await channel.assertQueue(queue, { durable: false });
      const error = await startError(
        consumeAmqp({
          store: store(),
          channel,
          queue,
          handler: async () => 'ok',
          ...({ [name]: value } as object),
        }),
      );
      expect(isIdemError(error, 'INVALID_INPUT')).toBe(true);
      expect((error as Error).message).toContain(name);
    } finally {
      await connection.close();
    }
  });

  it('JetStream: concurency (misspelt) is refused; every real option is taken', async () => {
    const { jsm, js, name } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    const consumer = await js.consumers.get(name, 'w');
    await expect(
      consumeJetStream({
        consumer: consumer as never,
        store: store(),
        handler: async () => 'ok',
        ...({ concurency: 4 } as object),
      }),
    ).rejects.toThrow(/concurency is not an option of @idem\/consumers/);
    const running = await consumeJetStream({
      consumer: consumer as never,
      store: store(),
      handler: async () => 'ok',
      key: (m) => m.info.streamSequence,
      payload: false,
      scope: ['nats', name, 'w'],
      retryDelayMs: 100,
      onMessage: () => {},
      concurrency: 2,
      workingIntervalMs: 1_000,
      leaseMs: 3_000,
      heartbeatMs: 1_000,
      maxHoldMs: 60_000,
      retentionMs: 60_000,
      storeTimeoutMs: 1_000,
      completionWaitMs: 1_000,
      maxOutcomeBytes: 1_000_000,
      isFinal: (s) => s.ok,
      onEvent: () => {},
      clock: undefined,
      serializer: undefined,
      outcomeCodec: undefined,
    });
    await running.stop(2_000);
  });
});

describe('ccrev consumers: key and payload functions', () => {
  // FIXED (was FINDING MEDIUM, lost messages): an async `key` function (a key looked up
  // elsewhere) returned a Promise, which canonical JSON refuses: every message was nacked
  // without requeue (dropped without a dead-letter exchange), and its handler never ran.
  it('RabbitMQ: an async key or payload function is awaited; the messages run once each', async () => {
    const q = await amqpQueue('ccrev-asynckey', { durable: false });
    const json = (m: { content: Uint8Array }) =>
      JSON.parse(Buffer.from(m.content).toString()) as { id: string; amount: number };
    try {
      const runs: string[] = [];
      const seen: MessageStatus[] = [];
      const consumer = await consumeAmqp({
        store: store(),
        channel: await q.channel(),
        queue: q.queue,
        prefetch: 1, // in order: a's duplicate comes once a is recorded
        key: async (m) => {
          await sleep(1);
          return json(m).id;
        },
        payload: async (m) => json(m).amount,
        handler: async (m) => {
          runs.push(Buffer.from(m.content).toString());
          return 'ok';
        },
        onMessage: (r) => seen.push(r.status),
      });
      await q.send(undefined, '{"id":"a","amount":1}');
      await q.send(undefined, '{"id":"b","amount":1}');
      await q.send(undefined, '{"id":"a","amount":1}'); // a's duplicate
      await q.send(undefined, '{"id":"a","amount":2}'); // another payload under a
      await until(() => seen.length >= 4);
      await consumer.stop(5_000);
      expect(runs.sort()).toEqual(['{"id":"a","amount":1}', '{"id":"b","amount":1}']);
      expect([...seen].sort()).toEqual(['processed', 'processed', 'rejected', 'replayed']);
    } finally {
      await q.close();
    }
  });
});

/**
 * A private redis-server the test stops and starts (by PID), a client with the options
 * store-redis recommends (no offline queue: a call made while Redis is down fails at once,
 * never applied long after its caller gave up), and what a consumer over it saw: handler runs
 * and statuses. `options` go to consumeAmqp / consumeJetStream.
 */
async function outageBed() {
  const server = await startPrivateRedis();
  const client = new Redis(server.url, recommendedRedisOptions({ commandTimeoutMs: 250 }));
  client.on('error', () => {});
  const seen = { runs: 0, statuses: [] as MessageStatus[] };
  const options = {
    store: createRedisStore({ client, keyPrefix: prefix }),
    storeTimeoutMs: 300,
    retryDelayMs: 150,
    handler: async () => {
      seen.runs += 1;
      return 'ok';
    },
    onMessage: (r: { status: MessageStatus }) => seen.statuses.push(r.status),
  };
  const close = async () => {
    client.disconnect();
    await server.stop();
  };
  return { server, seen, options, close };
}

/** A durable pull consumer `w` on a new stream; `count` of its pending and unacked messages. */
async function pullConsumer(config: { ack_wait: number; max_deliver?: number }) {
  const { jsm, js, name } = await bed.stream();
  await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit, ...config });
  return {
    name,
    publish: () => js.publish(`${name}.orders`, '{"n":1}'),
    consumer: async () => (await js.consumers.get(name, 'w')) as never,
    left: async () => {
      const info = await jsm.consumers.info(name, 'w');
      return info.num_pending + info.num_ack_pending;
    },
  };
}

describe('ccrev consumers: a store outage and the broker’s delivery bound', () => {
  // FIXED (was FINDING MEDIUM, lost messages): each give-back during a store outage spent a
  // delivery (every storeTimeoutMs + retryDelayMs: 6 s by default), so a Redis outage or
  // failover longer than max_deliver x 6 s, with the max_deliver / delivery-limit the README
  // recommends against poison messages, made JetStream stop delivering the message (never
  // processed) and a quorum queue drop it (or dead-letter it). Repro: max_deliver 3,
  // storeTimeoutMs 300, retryDelayMs 150, the store down 3 s: the message never ran.
  it('JetStream: a message that meets a store outage runs once the store is back, within max_deliver 3', async () => {
    const outage = await outageBed();
    try {
      const s = await pullConsumer({ ack_wait: 5_000_000_000, max_deliver: 3 });
      const consumer = await consumeJetStream({ ...outage.options, consumer: await s.consumer() });
      await outage.server.stop();
      await s.publish();
      await sleep(3_000); // about 7 deliveries' worth of give-backs
      await outage.server.start();
      await until(() => outage.seen.statuses.includes('processed'));
      await consumer.stop(2_000);
      expect(outage.seen.runs).toBe(1);
      expect(await s.left()).toBe(0);
    } finally {
      await outage.close();
    }
  });

  it('RabbitMQ quorum queue: a message that meets a store outage runs once the store is back, within delivery-limit 2', async () => {
    const outage = await outageBed();
    const q = await amqpQueue('ccrev-outage-quorum', {
      durable: true,
      arguments: { 'x-queue-type': 'quorum', 'x-delivery-limit': 2 },
    });
    try {
      const consumer = await consumeAmqp({
        ...outage.options,
        channel: await q.channel(),
        queue: q.queue,
      });
      await outage.server.stop();
      await q.send('outage-1');
      await sleep(3_000);
      await outage.server.start();
      await until(() => outage.seen.statuses.includes('processed'));
      await consumer.stop(2_000);
      expect(outage.seen.runs).toBe(1);
      expect(await q.left()).toBe(0);
    } finally {
      await q.close();
      await outage.close();
    }
  });
});

describe('ccrev consumers: stop() while a message waits for the store', () => {
  // Held: a message waiting in the consumer for the store (above) is given back at once by
  // stop(), not kept until its wait ends: another instance may reach the store.
  it('RabbitMQ: stop() gives back at once a message waiting for the store', async () => {
    const outage = await outageBed();
    const q = await amqpQueue('ccrev-outage-stop', { durable: false });
    try {
      const consumer = await consumeAmqp({
        ...outage.options,
        channel: await q.channel(),
        queue: q.queue,
      });
      await outage.server.stop();
      await q.send('outage-stop-1');
      await until(() => consumer.inFlight === 1);
      await sleep(1_000); // waiting for the store (a lease is 30 s)
      expect(outage.seen.statuses).toEqual([]);
      const stopping = performance.now();
      await consumer.stop(10_000);
      // Generous: the try under way ends within storeTimeoutMs.
      expect(performance.now() - stopping).toBeLessThan(5_000);
      expect(outage.seen).toEqual({ runs: 0, statuses: ['failed'] });
      await until(async () => (await q.left()) === 1, 5_000);
      expect(await q.left()).toBe(1);
    } finally {
      await q.close();
      await outage.close();
    }
  });

  it('JetStream: stop() gives back at once a message waiting for the store', async () => {
    const outage = await outageBed();
    try {
      const s = await pullConsumer({ ack_wait: 30_000_000_000 });
      const consumer = await consumeJetStream({ ...outage.options, consumer: await s.consumer() });
      await outage.server.stop();
      await s.publish();
      await until(() => consumer.inFlight === 1);
      await sleep(1_000);
      expect(outage.seen.statuses).toEqual([]);
      const stopping = performance.now();
      await consumer.stop(10_000);
      expect(performance.now() - stopping).toBeLessThan(5_000);
      expect(outage.seen).toEqual({ runs: 0, statuses: ['failed'] });
      // Given back (nak with retryDelayMs), not left to the 30 s ack_wait: a second instance
      // gets it once the store is back.
      await outage.server.start();
      const second = await consumeJetStream({ ...outage.options, consumer: await s.consumer() });
      await until(() => outage.seen.runs === 1);
      await second.stop(2_000);
      expect(outage.seen.runs).toBe(1);
    } finally {
      await outage.close();
    }
  });
});
