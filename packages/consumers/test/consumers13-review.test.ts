import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import {
  createIdempotency,
  everythingFinal,
  fingerprint,
  InvalidInputError,
  type JsonValue,
} from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL, startPrivateRedis } from '@idem/test-ledger';
import type { ChannelModel } from 'amqplib';
import { Redis } from 'ioredis';
import { AckPolicy, headers, type NatsConnection } from 'nats';
import { afterAll, describe, expect, it } from 'vitest';
import { consumeAmqp, consumeJetStream, type MessageStatus } from '../src/index.js';
import { connectAmqp, connectNats, NATS_URL, uniqueName } from './brokers.js';

// Adversarial review 13: JetStream heartbeats on a closed connection, stream sequence keys
// reused after a stream is recreated, in-progress naks burning max_deliver, option checks,
// poison bounds, key derivation and scope on RabbitMQ, a store outage under JetStream.
describe('consumers review 13', () => {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  const prefix = `${uniqueName('idem-consumers13')}:`;
  const store = createRedisStore({ client: redis, keyPrefix: prefix });
  let nc: NatsConnection | undefined;
  let amqpConnection: ChannelModel | undefined;
  const streams: string[] = [];
  const queues: string[] = [];
  afterAll(async () => {
    if (nc) {
      const jsm = await nc.jetstreamManager();
      for (const stream of streams) await jsm.streams.delete(stream).catch(() => {});
      await nc.close();
    }
    if (amqpConnection) {
      const admin = await amqpConnection.createChannel();
      for (const queue of queues) await admin.deleteQueue(queue).catch(() => {});
      await amqpConnection.close().catch(() => {});
    }
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });
  const until = async (done: () => boolean | Promise<boolean>, ms: number) => {
    const deadline = performance.now() + ms;
    while (!(await done()) && performance.now() < deadline) await sleep(25);
  };
  const amqp = async () => {
    amqpConnection ??= await connectAmqp();
    amqpConnection.on('error', () => {});
    return amqpConnection;
  };
  const newQueue = async (options: Record<string, unknown> = { durable: false }) => {
    const connection = await amqp();
    const queue = uniqueName('idem-review13');
    queues.push(queue);
    const admin = await connection.createChannel();
    await admin.assertQueue(queue, options);
    return { queue, admin };
  };
  const natsStream = async (
    consumerConfig: { ack_wait?: number; max_deliver?: number } = {},
    name?: string,
  ) => {
    nc ??= await connectNats();
    const stream = name ?? uniqueName('IDEM_REVIEW13').replace(/-/g, '_');
    if (!streams.includes(stream)) streams.push(stream);
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] });
    await jsm.consumers.add(stream, {
      durable_name: 'w',
      ack_policy: AckPolicy.Explicit,
      ack_wait: consumerConfig.ack_wait ?? 5_000_000_000,
      max_deliver: consumerConfig.max_deliver ?? -1,
    });
    const js = nc.jetstream();
    return {
      stream,
      jsm,
      js,
      consumer: () => js.consumers.get(stream, 'w'),
      publish: async (body: string, id?: string) => {
        const h = headers();
        if (id) h.set('Nats-Msg-Id', id);
        await js.publish(`${stream}.orders`, body, id ? { headers: h } : {});
      },
      pending: async () => {
        const info = await jsm.consumers.info(stream, 'w');
        return info.num_pending + info.num_ack_pending;
      },
    };
  };

  // Held: `working()` goes through nats.js's protocol handler, which does not throw on a
  // closed connection, so the bare setInterval in consumeJetStream cannot crash the process
  // when the connection closes mid-handler (checked in a child process, where a crash shows).
  it('JetStream: the connection closes while a handler runs; the working() heartbeat must not crash the process', async () => {
    const s = await natsStream();
    await s.publish('{"id":"long"}', 'long-1');
    const dist = fileURLToPath(new URL('../dist/index.js', import.meta.url));
    const code = `
      import { connect } from 'nats';
      import { Redis } from 'ioredis';
      import { createRedisStore } from '@idem/store-redis';
      import { consumeJetStream } from ${JSON.stringify(dist)};
      const cfg = JSON.parse(process.env.CHILD_CONFIG);
      const redis = new Redis(cfg.redisUrl, { maxRetriesPerRequest: 2 });
      const nc = await connect({ servers: cfg.natsUrl });
      const consumer = await nc.jetstream().consumers.get(cfg.stream, 'w');
      await consumeJetStream({
        store: createRedisStore({ client: redis, keyPrefix: cfg.prefix }),
        consumer,
        workingIntervalMs: 100,
        handler: async () => {
          console.log('started');
          void nc.close(); // the connection goes away mid-handler
          await new Promise((r) => setTimeout(r, 800));
          return 'done';
        },
      });
      setTimeout(() => { console.log('survived'); redis.disconnect(); process.exit(0); }, 2000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
      env: {
        ...process.env,
        CHILD_CONFIG: JSON.stringify({
          redisUrl: REDIS_URL,
          natsUrl: NATS_URL,
          stream: s.stream,
          prefix: `${prefix}child:`,
        }),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    const exitCode = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      child.once('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    expect(out).toContain('started');
    expect({ exitCode, crashed: /CONNECTION_CLOSED|CONNECTION_DRAINING/.test(err) }).toEqual({
      exitCode: 0,
      crashed: false,
    });
    expect(out).toContain('survived');
  });

  // FINDING (MEDIUM): the default JetStream key of a message without `Nats-Msg-Id` is
  // `stream:streamSequence`, and the default scope is `['nats', stream, consumer]`. Deleting
  // and recreating a stream (a redeploy, an infra-as-code replace, a test environment) starts
  // sequences at 1 again while the records live on for `retentionMs` (24 h): the new stream's
  // message 1 meets the old message 1's record. Same body: acked as `replayed`, the handler
  // never runs; another body: `MISMATCH`, terminated. Either way a new message is dropped.
  // Fix: make the fallback key unique per stored message, e.g. `stream:seq:info.timestampNanos`
  // (stable across redeliveries), or the stream's creation time in the scope.
  // fixed: the fallback key is `stream:streamSequence:info.timestampNanos` (stable across
  // redeliveries, new for a recreated stream's message).
  it('JetStream: a recreated stream reuses sequence numbers; its messages must not answer to the old stream’s records', async () => {
    const name = uniqueName('IDEM_REVIEW13_RECREATE').replace(/-/g, '_');
    const runs: string[] = [];
    const statuses: MessageStatus[] = [];
    const consumeOnce = async (body: string) => {
      const s = await natsStream({}, name);
      const consumer = await consumeJetStream({
        store,
        consumer: await s.consumer(),
        retryDelayMs: 100,
        handler: async (message) => {
          runs.push(Buffer.from(message.data).toString());
          return 'ok';
        },
        onMessage: (r) => statuses.push(r.status),
      });
      const before = statuses.length;
      await s.publish(body); // no Nats-Msg-Id: keyed by stream and sequence
      await until(() => statuses.length > before, 10_000);
      await consumer.stop(2_000);
      await s.jsm.streams.delete(name);
    };
    await consumeOnce('{"order":"A"}');
    await consumeOnce('{"order":"A"}'); // the same content, a new message of the new stream
    await consumeOnce('{"order":"B"}'); // recreated once more: another order
    // Before a fix: ['processed', 'replayed', 'rejected'] and the handler ran for A once.
    expect(statuses).toEqual(['processed', 'processed', 'processed']);
    expect(runs).toEqual(['{"order":"A"}', '{"order":"A"}', '{"order":"B"}']);
  });

  // FINDING (MEDIUM): a duplicate whose key is in progress is nak'ed after
  // `min(retryDelayMs, lease left)` (1 s by default against a 30 s lease), and every nak is a
  // delivery. The README tells users to bound poison messages with `max_deliver` (or a
  // quorum queue's delivery-limit); then a consumer that crashed mid-handler (its lease lives
  // on, unrenewed) makes the redelivery burn all its deliveries while the dead lease runs
  // out: JetStream stops delivering, the message is never processed, nothing is recorded.
  // Fix: nak an in-progress duplicate with the lease's remaining time (plus jitter), not
  // capped by retryDelayMs, so a crashed holder costs one delivery; document that
  // max_deliver must cover leaseMs / that delay.
  // fixed: an in-progress duplicate is given back after the holder's lease has passed (plus
  // jitter, at most max(leaseMs, retryDelayMs) plus the jitter): one delivery, not one per retryDelayMs.
  it('JetStream: a crashed holder’s live lease must not exhaust max_deliver and lose the message', async () => {
    const s = await natsStream({ ack_wait: 2_000_000_000, max_deliver: 4 });
    const body = '{"id":"order-crashed"}';
    // The consumer that took the key then died: acquired, never renewed, never completed.
    const crashed = createIdempotency({ store, leaseMs: 2_500, heartbeatMs: false });
    const begun = await crashed.begin({
      key: 'order-crashed',
      scope: ['nats', s.stream, 'w'],
      fingerprint: fingerprint({ body: new Uint8Array(Buffer.from(body)) }),
    });
    expect(begun.kind).toBe('acquired');
    let runs = 0;
    const statuses: MessageStatus[] = [];
    const consumer = await consumeJetStream({
      store,
      consumer: await s.consumer(),
      leaseMs: 2_500,
      retryDelayMs: 200, // within the documented range: "delay before ... delivered again"
      handler: async () => {
        runs += 1;
        return 'ok';
      },
      onMessage: (r) => statuses.push(r.status),
    });
    await s.publish(body, 'order-crashed');
    await until(() => runs === 1, 8_000); // the lease ran out at 2.5 s
    await consumer.stop(2_000);
    // Before a fix: four in_progress naks in ~0.6 s, then JetStream gave up: runs 0.
    expect({ runs, inProgress: statuses.filter((x) => x === 'in_progress').length }).toEqual({
      runs: 1,
      inProgress: expect.any(Number),
    });
    expect(statuses.at(-1)).toBe('processed');
  });

  // FINDING (MEDIUM), the same on RabbitMQ: a quorum queue's `x-delivery-limit` (what the
  // README recommends against poison messages) counts every nack-with-requeue, so the
  // in-progress give-backs (every min(retryDelayMs, lease left)) drop the message while a
  // crashed consumer's lease runs out. Fix as above (hold or requeue after the lease's
  // remaining time).
  // fixed: an in-progress duplicate is given back after the holder's lease has passed (plus
  // jitter, at most max(leaseMs, retryDelayMs) plus the jitter): one delivery, not one per retryDelayMs.
  it('RabbitMQ quorum queue: a crashed holder’s live lease must not exhaust the delivery-limit and lose the message', async () => {
    const { queue, admin } = await newQueue({
      durable: true,
      arguments: { 'x-queue-type': 'quorum', 'x-delivery-limit': 3 },
    });
    const body = '{"id":"amqp-crashed"}';
    const crashed = createIdempotency({ store, leaseMs: 2_500, heartbeatMs: false });
    const begun = await crashed.begin({
      key: 'amqp-crashed',
      scope: ['amqp', queue],
      fingerprint: fingerprint({ body: new Uint8Array(Buffer.from(body)) }),
    });
    expect(begun.kind).toBe('acquired');
    let runs = 0;
    const statuses: MessageStatus[] = [];
    const consumer = await consumeAmqp({
      store,
      channel: await (await amqp()).createChannel(),
      queue,
      leaseMs: 2_500,
      retryDelayMs: 200,
      handler: async () => {
        runs += 1;
        return 'ok';
      },
      onMessage: (r) => statuses.push(r.status),
    });
    admin.sendToQueue(queue, Buffer.from(body), { messageId: 'amqp-crashed', persistent: true });
    await until(() => runs === 1, 8_000);
    await consumer.stop(2_000);
    // Before a fix: in_progress give-backs until the limit, then the message was dropped.
    expect({ runs, left: (await admin.checkQueue(queue)).messageCount }).toEqual({
      runs: 1,
      left: 0,
    });
    expect(statuses.at(-1)).toBe('processed');
  });

  // FINDING (LOW): consumeAmqp passes `prefetch` to the channel unchecked (consumeJetStream
  // checks `concurrency`). `prefetch: 0` (and NaN, sent as 0) is RabbitMQ's "unlimited":
  // every message of the queue is delivered at once, each held in memory (and, when given
  // back, in a retryDelayMs timer): no bounded memory. 1.5 is accepted as is; -1 fails with
  // amqplib's RangeError, not a typed error. Fix: reject anything but an integer in
  // 1..65535 with InvalidInputError before touching the channel.
  // fixed: consumeAmqp throws InvalidInputError unless prefetch is an integer in 1..65535.
  it('RabbitMQ: prefetch 0 (unbounded), negative or fractional is a typed error', async () => {
    const { queue } = await newQueue();
    const connection = await amqp();
    const outcomes: string[] = [];
    for (const prefetch of [0, -1, 1.5, Number.NaN]) {
      const channel = await connection.createChannel();
      channel.on('error', () => {});
      try {
        const consumer = await consumeAmqp({
          store,
          channel,
          queue,
          prefetch,
          handler: async () => 1,
        });
        await consumer.stop(1_000);
        outcomes.push(`${prefetch}: accepted`);
      } catch (error) {
        outcomes.push(
          `${prefetch}: ${error instanceof InvalidInputError ? 'typed' : (error as Error).name}`,
        );
      }
      await channel.close().catch(() => {});
    }
    // Before a fix: ['0: accepted', '-1: RangeError', '1.5: accepted', 'NaN: accepted'].
    expect(outcomes).toEqual(['0: typed', '-1: typed', '1.5: typed', 'NaN: typed']);
  });

  // FINDING (LOW): `workingIntervalMs` is not checked: 0, a negative number or NaN becomes a
  // 1 ms setInterval sending `working()` to the server a thousand times a second for every
  // in-flight message (a CPU and broker hot loop); a value above `ack_wait` silently lets
  // JetStream redeliver. Fix: require a finite positive number (InvalidInputError), as
  // `retryDelayMs` and `concurrency` are.
  // fixed: consumeJetStream throws InvalidInputError unless workingIntervalMs is finite and > 0.
  it('JetStream: workingIntervalMs 0, negative or NaN is a typed error, not a 1 ms heartbeat loop', async () => {
    const s = await natsStream();
    const outcomes: string[] = [];
    for (const workingIntervalMs of [0, -5, Number.NaN]) {
      try {
        const consumer = await consumeJetStream({
          store,
          consumer: await s.consumer(),
          workingIntervalMs,
          handler: async () => 1,
        });
        await consumer.stop(1_000);
        outcomes.push(`${workingIntervalMs}: accepted`);
      } catch (error) {
        outcomes.push(
          `${workingIntervalMs}: ${error instanceof InvalidInputError ? 'typed' : 'other'}`,
        );
      }
    }
    expect(outcomes).toEqual(['0: typed', '-5: typed', 'NaN: typed']);
  });

  it('JetStream: a handler that always throws is released each time and bounded by max_deliver (spaced by retryDelayMs)', async () => {
    const s = await natsStream({ max_deliver: 3 });
    const runs: number[] = [];
    const statuses: MessageStatus[] = [];
    const consumer = await consumeJetStream({
      store,
      consumer: await s.consumer(),
      retryDelayMs: 300,
      handler: async () => {
        runs.push(performance.now());
        throw new Error('poison');
      },
      onMessage: (r) => statuses.push(r.status),
    });
    await s.publish('{"poison":true}', 'poison-1');
    await until(() => runs.length >= 3, 10_000);
    await sleep(1_000); // no fourth delivery
    await consumer.stop(2_000);
    expect(runs).toHaveLength(3);
    expect(statuses).toEqual(['failed', 'failed', 'failed']);
    for (let i = 1; i < runs.length; i++)
      expect((runs[i] as number) - (runs[i - 1] as number)).toBeGreaterThanOrEqual(250);
  });

  it('RabbitMQ: key derivation and scope: non-ASCII and 255-byte ids, an empty id, one id on two queues, a header key', async () => {
    const a = await newQueue();
    const b = await newQueue();
    const connection = await amqp();
    const runs: string[] = [];
    const seen: { q: string; id: string; status: MessageStatus }[] = [];
    const consumers = [];
    for (const { queue } of [a, b])
      consumers.push(
        await consumeAmqp({
          store,
          channel: await connection.createChannel(),
          queue,
          prefetch: 1,
          retryDelayMs: 50,
          // A header, when present (a number here), else the messageId.
          key: (m) =>
            (m.properties.headers?.['x-order'] as JsonValue | undefined) ?? m.properties.messageId,
          handler: async (m) => {
            runs.push(`${queue === a.queue ? 'a' : 'b'}:${m.content.toString()}`);
            return 'ok';
          },
          onMessage: (r) =>
            seen.push({
              q: queue === a.queue ? 'a' : 'b',
              id: String(r.message.properties.messageId),
              status: r.status,
            }),
        }),
      );
    const long = 'k'.repeat(255);
    const send = (q: string, body: string, messageId?: string, h?: Record<string, unknown>) =>
      a.admin.sendToQueue(q, Buffer.from(body), {
        ...(messageId !== undefined ? { messageId } : {}),
        ...(h ? { headers: h } : {}),
      });
    send(a.queue, '1', 'заказ-1');
    send(a.queue, '2', 'заказ-2'); // hashes differently from заказ-1
    send(a.queue, '1', 'заказ-1'); // replay
    send(a.queue, '3', long);
    send(a.queue, '3', long); // replay
    send(a.queue, '4', ''); // empty id: rejected
    send(a.queue, '5', 'h', { 'x-order': 42 });
    send(a.queue, '6', 'h2', { 'x-order': 43 }); // another number: another key
    send(a.queue, 'shared', 'shared-id');
    send(b.queue, 'shared', 'shared-id'); // another queue: its own scope
    await until(() => seen.length >= 10, 10_000);
    for (const c of consumers) await c.stop(2_000);
    expect(runs.sort()).toEqual(['a:1', 'a:2', 'a:3', 'a:5', 'a:6', 'a:shared', 'b:shared']);
    expect(seen.filter((x) => x.status === 'replayed').map((x) => x.id)).toEqual(['заказ-1', long]);
    expect(seen.filter((x) => x.status === 'rejected')).toHaveLength(1);
    for (const { queue } of [a, b]) expect((await a.admin.checkQueue(queue)).messageCount).toBe(0);
  });

  // ccrev: the delivery whose failure was recorded is acked at once ('processed', with the
  // error); it was requeued ('failed') and came back only to be acked as a replay.
  it('RabbitMQ: isFinal everythingFinal: a throwing handler runs once, its recorded failure is acked', async () => {
    const { queue, admin } = await newQueue();
    const connection = await amqp();
    let runs = 0;
    const statuses: MessageStatus[] = [];
    const consumer = await consumeAmqp({
      store,
      channel: await connection.createChannel(),
      queue,
      retryDelayMs: 50,
      isFinal: everythingFinal,
      handler: async () => {
        runs += 1;
        throw new Error('card declined');
      },
      onMessage: (r) => statuses.push(r.status),
    });
    admin.sendToQueue(queue, Buffer.from('{}'), { messageId: 'declined-1' });
    await until(() => statuses.includes('processed'), 10_000);
    await sleep(300); // a requeued copy would come back within retryDelayMs
    await consumer.stop(2_000);
    expect(runs).toBe(1);
    expect(statuses).toEqual(['processed']);
    expect((await admin.checkQueue(queue)).messageCount).toBe(0);
  });

  it('JetStream: the store dies mid-stream: nothing runs or is acked without its record; all go through once it returns', async () => {
    const server = await startPrivateRedis();
    const client = new Redis(server.url, { maxRetriesPerRequest: 1 });
    client.on('error', () => {});
    try {
      const s = await natsStream();
      const runs = new Map<string, number>();
      const statuses: MessageStatus[] = [];
      const failedAt: number[] = [];
      const consumer = await consumeJetStream({
        store: createRedisStore({ client, keyPrefix: prefix }),
        consumer: await s.consumer(),
        concurrency: 4,
        storeTimeoutMs: 300,
        retryDelayMs: 150,
        // ccrev: a message the store cannot take waits in the consumer for about a lease
        // before it is given back (a give-back at every failure spent max_deliver).
        leaseMs: 1_500,
        handler: async (m) => {
          const id = Buffer.from(m.data).toString();
          runs.set(id, (runs.get(id) ?? 0) + 1);
          return id;
        },
        onMessage: (r) => {
          statuses.push(r.status);
          if (r.status === 'failed') failedAt.push(performance.now());
        },
      });
      for (let i = 0; i < 4; i++) await s.publish(`m-${i}`, `m-${i}`);
      await until(() => statuses.filter((x) => x === 'processed').length === 4, 10_000);
      await server.stop();
      const downAt = performance.now();
      for (let i = 4; i < 8; i++) await s.publish(`m-${i}`, `m-${i}`);
      await until(() => failedAt.length >= 4, 10_000);
      const during = runs.size;
      // Bounded: the first give-backs come within a few store time limits, not never.
      expect((failedAt[0] as number) - downAt).toBeLessThan(3_000);
      await server.start();
      await until(async () => runs.size === 8 && (await s.pending()) === 0, 15_000);
      await consumer.stop(2_000);
      expect(during).toBe(4);
      expect([...runs.values()]).toEqual(Array(8).fill(1));
      expect(await s.pending()).toBe(0);
    } finally {
      client.disconnect();
      await server.stop();
    }
  });
});
