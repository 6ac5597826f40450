// Review round 13 (rev13client): how long consumeAmqp keeps a delivery unacked while it waits
// to give it back, against RabbitMQ's consumer_timeout. The shared broker keeps the default
// (30 min, checked once a minute), so this file starts its own RabbitMQ node (on free ports,
// its own node name and data directory) with consumer_timeout = 1.5 s, checked every 0.5 s,
// and stops it by its process group id afterwards. Redis is the shared one.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import amqplib, { type ChannelModel } from 'amqplib';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consumeAmqp, type MessageStatus } from '../src/index.js';
import { uniqueName } from './brokers.js';

const CONSUMER_TIMEOUT_MS = 1_500;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

interface PrivateRabbit {
  url: string;
  stop(): Promise<void>;
}

/** A RabbitMQ node of this test file's own, with a short consumer_timeout. */
async function startPrivateRabbit(): Promise<PrivateRabbit> {
  const dir = mkdtempSync(join(tmpdir(), 'idem-rev13-rabbit-'));
  const port = await freePort();
  const distPort = await freePort();
  writeFileSync(
    join(dir, 'rabbitmq.conf'),
    `listeners.tcp.default = ${port}\nconsumer_timeout = ${CONSUMER_TIMEOUT_MS}\nloopback_users.guest = false\n`,
  );
  // The channel checks its deliveries' timeouts at every tick (60 s by default).
  writeFileSync(join(dir, 'advanced.config'), '[{rabbit, [{channel_tick_interval, 500}]}].\n');
  const child: ChildProcess = spawn('/usr/lib/rabbitmq/bin/rabbitmq-server', [], {
    env: {
      ...process.env,
      HOME: dir,
      RABBITMQ_NODENAME: `idem-rev13-${randomBytes(3).toString('hex')}@localhost`,
      RABBITMQ_NODE_PORT: String(port),
      RABBITMQ_DIST_PORT: String(distPort),
      RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
      RABBITMQ_LOG_BASE: join(dir, 'log'),
      RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq.conf'),
      RABBITMQ_ADVANCED_CONFIG_FILE: join(dir, 'advanced.config'),
      RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
      RABBITMQ_ENABLED_PLUGINS: '',
    },
    stdio: 'ignore',
    detached: true,
  });
  child.once('error', () => {});
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // already gone
      }
      await Promise.race([exited, sleep(10_000)]);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const url = `amqp://guest:guest@127.0.0.1:${port}`;
  // Erlang's boot takes 5-10 s on an idle machine and several times that beside the other test
  // lanes on two cores (the rev13fix review saw 25 s missed at load 20): up to 90 s.
  const deadline = performance.now() + 90_000;
  while (performance.now() < deadline) {
    const connection = await amqplib.connect(url, { timeout: 1_000 }).catch(() => undefined);
    if (connection) {
      await connection.close().catch(() => {});
      return { url, stop };
    }
    if (child.exitCode !== null) break;
    await sleep(250);
  }
  await stop();
  throw new Error(
    'a private rabbitmq-server (/usr/lib/rabbitmq/bin/rabbitmq-server) did not start within 90 s',
  );
}

describe('rev13 consumers: RabbitMQ consumer_timeout and held deliveries', () => {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  const prefix = `${uniqueName('rev13-amqp-hold')}:`;
  let rabbit: PrivateRabbit | undefined;
  let connection: ChannelModel | undefined;
  beforeAll(async () => {
    rabbit = await startPrivateRabbit();
    connection = await amqplib.connect(rabbit.url);
    connection.on('error', () => {});
  }, 100_000);
  afterAll(async () => {
    await connection?.close().catch(() => {});
    await rabbit?.stop();
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  }, 20_000);

  // FIXED (was FINDING MEDIUM): a failed message was held unacked for `retryDelayMs` before its nack
  // (RabbitMQ cannot delay a requeue), and retryDelayMs is accepted up to 2^31-1 ms. Past the
  // broker's `consumer_timeout` (30 min by default) RabbitMQ closes the channel with
  // PRECONDITION_FAILED ("delivery acknowledgement on channel … timed out"): the channel's
  // 'error' event (an uncaught exception without a listener: the process dies), every
  // unacked message requeued, and the consumer gone for good (consumeAmqp does not reopen
  // it): the message is never processed again by this process, an outage that does not end
  // by itself. retryDelayMs: 3_600_000 ("back off an hour") is enough. The in-progress hold was
  // capped at 10 min for exactly this reason (consumersrev13), the failure hold was not.
  // Reproduce: consumer_timeout 1.5 s, a handler that fails once, retryDelayMs 4 s.
  // Fix: option `consumerTimeoutMs` (default RabbitMQ's 30 min); no delivery is held past a
  // third of it from its delivery: it is given back then (README).
  it('a failed message held for a retryDelayMs past consumer_timeout: the channel survives and the message runs again', {
    timeout: 20_000,
  }, async () => {
    if (!connection) throw new Error('no private RabbitMQ');
    const channel = await connection.createChannel();
    const channelErrors: string[] = [];
    channel.on('error', (error: Error) => channelErrors.push(error.message));
    const queue = uniqueName('rev13-hold');
    await channel.assertQueue(queue, { durable: false });
    const admin = await connection.createChannel();
    let runs = 0;
    const statuses: MessageStatus[] = [];
    const consumer = await consumeAmqp({
      store: createRedisStore({ client: redis, keyPrefix: prefix }),
      channel,
      queue,
      retryDelayMs: 4_000,
      // The broker's consumer_timeout (before the fix no such option: ignored).
      consumerTimeoutMs: CONSUMER_TIMEOUT_MS,
      handler: async () => {
        runs += 1;
        if (runs === 1) throw new Error('transient');
        return 'ok';
      },
      onMessage: (r) => statuses.push(r.status),
    });
    admin.sendToQueue(queue, Buffer.from('{"order":1}'), { messageId: 'order-1' });
    const deadline = performance.now() + 8_000;
    while (performance.now() < deadline && !(runs >= 2 && statuses.length >= 2)) await sleep(50);
    await consumer.stop(1_000);
    const left = (await admin.checkQueue(queue)).messageCount;
    await admin.deleteQueue(queue).catch(() => {});
    // Before a fix: the channel closed at about 2 s (PRECONDITION_FAILED), runs 1, the message
    // back in the queue with no consumer left.
    expect({ channelErrors, runs, statuses, left }).toEqual({
      channelErrors: [],
      runs: 2,
      statuses: ['failed', 'processed'],
      left: 0,
    });
  });
});
