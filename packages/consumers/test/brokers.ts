import { randomBytes } from 'node:crypto';
import type { IdempotencyStore } from '@idem/core';
import { REDIS_URL } from '@idem/test-ledger';
import amqp, { type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import { Redis } from 'ioredis';
import { AckPolicy, connect, type JsMsg, type NatsConnection } from 'nats';
import { afterAll, beforeAll } from 'vitest';
import { consumeAmqp, consumeJetStream, type IdempotentConsumer } from '../src/index.js';
import { until } from './late-store.js';

/** RabbitMQ the tests use. */
export const AMQP_URL = process.env.IDEM_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
/** NATS (with JetStream) the tests use. */
export const NATS_URL = process.env.IDEM_NATS_URL ?? 'nats://127.0.0.1:4222';

const AMQP_HELP = `These tests need RabbitMQ at ${AMQP_URL}: start it (rabbitmq-server -detached, or bash scripts/bootstrap.sh --services) or point IDEM_AMQP_URL at one (amqp://user:password@host:port).`;
const NATS_HELP = `These tests need NATS with JetStream at ${NATS_URL}: start it (nats-server -js, or bash scripts/bootstrap.sh --services) or point IDEM_NATS_URL at one (nats://host:port).`;

/** A name unique to this test run. */
export const uniqueName = (prefix: string): string =>
  `${prefix}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;

/** Connects to RabbitMQ, or fails with how to provide it. */
export async function connectAmqp(): Promise<ChannelModel> {
  try {
    return await amqp.connect(AMQP_URL, { timeout: 5_000 });
  } catch (error) {
    throw new Error(`${AMQP_HELP} (${(error as Error).message})`);
  }
}

/** Connects to NATS and checks JetStream is on, or fails with how to provide it. */
export async function connectNats(): Promise<NatsConnection> {
  let nc: NatsConnection;
  try {
    nc = await connect({ servers: NATS_URL, timeout: 5_000, maxReconnectAttempts: 5 });
  } catch (error) {
    throw new Error(`${NATS_HELP} (${(error as Error).message})`);
  }
  try {
    await (await nc.jetstreamManager()).getAccountInfo();
  } catch (error) {
    await nc.close();
    throw new Error(
      `NATS answers but JetStream is off. ${NATS_HELP} (${(error as Error).message})`,
    );
  }
  return nc;
}

/**
 * A new stream (named from `prefix`, recorded in `streams` for the test's clean-up) with a
 * durable pull consumer `w` (explicit acks, `ackWaitMs`), and `count` messages `{"n":1}`...
 * published on `<stream>.orders`. Answers the stream's name.
 */
export async function durableStream(
  nc: NatsConnection,
  prefix: string,
  streams: string[],
  { ackWaitMs, count }: { ackWaitMs: number; count: number },
): Promise<string> {
  const jsm = await nc.jetstreamManager();
  const stream = uniqueName(prefix).replace(/-/g, '_');
  streams.push(stream);
  await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] });
  await jsm.consumers.add(stream, {
    durable_name: 'w',
    ack_policy: AckPolicy.Explicit,
    ack_wait: ackWaitMs * 1_000_000,
  });
  const js = nc.jetstream();
  for (let n = 1; n <= count; n++) await js.publish(`${stream}.orders`, `{"n":${n}}`);
  return stream;
}

/**
 * What a JetStream test file shares: a Redis client and a key prefix unique to the run (for
 * the store), the NATS connection (made before the file's tests) and the streams it added.
 * Registers the file's `beforeAll` and `afterAll`: after its tests the streams and the
 * prefix's keys are deleted and both connections closed.
 */
export function jetStreamBed(label: string) {
  const bed = {
    /** Set before the file's tests run. */
    nc: undefined as unknown as NatsConnection,
    redis: new Redis(process.env.IDEM_REDIS_URL ?? REDIS_URL, { maxRetriesPerRequest: 2 }),
    prefix: `${uniqueName(label)}:`,
    streams: [] as string[],
    /** A new stream named from `label`, taking `<name>.>`, deleted after the file's tests. */
    async stream() {
      const jsm = await bed.nc.jetstreamManager();
      const name = uniqueName(label).replace(/-/g, '_');
      await jsm.streams.add({ name, subjects: [`${name}.>`] });
      bed.streams.push(name);
      return { jsm, name, js: bed.nc.jetstream() };
    },
  };
  beforeAll(async () => {
    bed.nc = await connectNats();
  });
  afterAll(async () => {
    const jsm = await bed.nc.jetstreamManager();
    for (const s of bed.streams) await jsm.streams.delete(s).catch(() => {});
    await bed.nc.close();
    const keys = await bed.redis.keys(`${bed.prefix}*`);
    if (keys.length > 0) await bed.redis.del(...keys);
    bed.redis.disconnect();
  });
  return bed;
}

/**
 * A Redis client and a key prefix unique to the run, for a test file's stores: registers the
 * file's `afterAll`, which deletes the prefix's keys and disconnects the client.
 */
export function redisBed(label: string) {
  const redis = new Redis(process.env.IDEM_REDIS_URL ?? REDIS_URL, { maxRetriesPerRequest: 2 });
  const prefix = `${uniqueName(label)}:`;
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });
  return { redis, prefix };
}

/** Queue names a test file declares on RabbitMQ, deleted after its tests (its `afterAll`). */
export function amqpQueues(): string[] {
  const queues: string[] = [];
  afterAll(async () => {
    const connection = await connectAmqp();
    const channel = await connection.createChannel();
    for (const queue of queues) await channel.deleteQueue(queue).catch(() => undefined);
    await connection.close().catch(() => undefined);
  });
  return queues;
}

/** One broker with a queue or stream of its own, as broker-generic scenarios use it. */
export interface Bench {
  /** A consumer of the messages published by `publish`, on `store`, with `options`. */
  start(store: IdempotencyStore, options: object): Promise<IdempotentConsumer>;
  publish(): Promise<void>;
  close(): Promise<void>;
}

/** RabbitMQ: a queue of its own (named from `label`, deleted with the file's `queues`). */
export async function rabbitBench(queues: string[], label: string): Promise<Bench> {
  const connection = await connectAmqp();
  const channel = await connection.createChannel();
  const queue = uniqueName(label);
  queues.push(queue);
  await channel.assertQueue(queue, { durable: false });
  return {
    start: async (store, options) =>
      consumeAmqp<ConsumeMessage, unknown>({
        channel: await connection.createChannel(),
        queue,
        store,
        handler: async () => 'ok',
        ...options,
      }),
    publish: async () => {
      channel.sendToQueue(queue, Buffer.from('a'), { messageId: uniqueName('m') });
    },
    close: () => connection.close().catch(() => undefined),
  };
}

/** NATS JetStream: a stream of its own (recorded in `streams`), durable consumer `w`. */
export async function jetStreamBench(
  nc: NatsConnection,
  streams: string[],
  label: string,
): Promise<Bench> {
  const stream = await durableStream(nc, label, streams, { ackWaitMs: 10_000, count: 0 });
  return {
    start: async (store, options) =>
      consumeJetStream<JsMsg, unknown>({
        consumer: await nc.jetstream().consumers.get(stream, 'w'),
        store,
        handler: async () => 'ok',
        ...options,
      }),
    publish: async () => {
      await nc.jetstream().publish(`${stream}.orders`, '{"n":1}');
    },
    close: async () => {},
  };
}

/**
 * Another instance on RabbitMQ: a consumer of `queue` on a channel of its own, stopped once
 * its handler ran (10 s at most). Answers the runs of its handler (`'second'` each).
 */
export async function secondAmqpRuns(
  connection: ChannelModel,
  queue: string,
  store: IdempotencyStore,
): Promise<string[]> {
  const runs: string[] = [];
  const other = await consumeAmqp<ConsumeMessage, string>({
    channel: await connection.createChannel(),
    queue,
    store,
    handler: async () => {
      runs.push('second');
      return 'second';
    },
  });
  await until(() => runs.length > 0, 10_000);
  await other.stop(2_000);
  return runs;
}

/**
 * Another instance on `bench` (store: `store`): a consumer whose handler records its runs
 * (`'second'` each), stopped once it reported a message (10 s at most). Answers the statuses
 * it reported and its handler's runs.
 */
export async function anotherInstance(
  bench: Bench,
  store: IdempotencyStore,
): Promise<{ statuses: string[]; runs: string[] }> {
  const runs: string[] = [];
  const statuses: string[] = [];
  const other = await bench.start(store, {
    handler: async () => {
      runs.push('second');
      return 'second';
    },
    onMessage: (r: { status: string }) => statuses.push(r.status),
  });
  await until(() => statuses.length > 0, 10_000);
  await other.stop(2_000);
  return { statuses, runs };
}

/**
 * The acks and nacks `channel` sends from now on, in order (`ack`, `nack:true` for a requeue,
 * `nack:false`), each still sent.
 */
export function recordAcks(channel: Channel): string[] {
  const calls: string[] = [];
  const ack = channel.ack.bind(channel);
  const nack = channel.nack.bind(channel);
  channel.ack = ((m: ConsumeMessage) => {
    calls.push('ack');
    ack(m);
  }) as never;
  channel.nack = ((m: ConsumeMessage, all?: boolean, requeue?: boolean) => {
    calls.push(`nack:${String(requeue)}`);
    nack(m, all, requeue);
  }) as never;
  return calls;
}

/**
 * On `connection`: a confirm channel to publish with, a new queue (recorded in `queues` for
 * the file's clean-up) and a channel to consume it whose acks and nacks are recorded.
 */
export async function recordedQueue(connection: ChannelModel, queues: string[], label: string) {
  const admin = await connection.createConfirmChannel();
  const queue = uniqueName(label);
  queues.push(queue);
  await admin.assertQueue(queue, { durable: false });
  const channel = await connection.createChannel();
  return { admin, queue, channel, calls: recordAcks(channel) };
}

/**
 * Records on `events`, in order, the acks and nacks sent on `channel` and its close (the
 * calls still reach the broker).
 */
export function recordSettles(channel: Channel, events: string[]): void {
  channel.on('close', () => events.push('close'));
  for (const name of ['ack', 'nack'] as const) {
    const real = channel[name].bind(channel) as (...args: unknown[]) => void;
    (channel as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
      events.push(name);
      real(...args);
    };
  }
}

/**
 * An `openChannel` on `connection` that declares `queue` (again, after its deletion) and
 * records each channel's acks, nacks and close in `log` (one array a channel, in order) and
 * its errors in `errors`.
 */
export function recordingOpenChannel(
  connection: ChannelModel,
  queue: string,
): { openChannel: () => Promise<Channel>; log: string[][]; errors: unknown[] } {
  const log: string[][] = [];
  const errors: unknown[] = [];
  const openChannel = async () => {
    const channel = await connection.createChannel();
    const events: string[] = [];
    log.push(events);
    channel.on('error', (error) => errors.push(error));
    recordSettles(channel, events);
    await channel.assertQueue(queue);
    return channel;
  };
  return { openChannel, log, errors };
}

/** Acquisitions with a 10 s lease (held past maxHoldMs), final writes forgotten at once. */
export function longLeaseForgetfulStore(inner: IdempotencyStore): IdempotencyStore {
  return new Proxy(inner, {
    get(target, name, receiver) {
      if (name === 'acquire')
        return (input: Parameters<IdempotencyStore['acquire']>[0]) =>
          target.acquire({ ...input, leaseMs: 10_000 });
      if (name === 'complete')
        return (input: Parameters<IdempotencyStore['complete']>[0]) =>
          target.complete({ ...input, retentionMs: 0 });
      return Reflect.get(target, name, receiver);
    },
  });
}

/** A promise and the function that fulfils it. */
export function gate(): { open: () => void; opened: Promise<void> } {
  let open: () => void = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}
