// A consumer in its own process for the rev10 review (test/rev10-shutdown.test.ts): what
// only a whole process shows (an unhandled rejection that kills it, a timer that keeps it
// alive after a clean shutdown). argv[2]: JSON { mode, queue, prefix }. Prints one JSON line
// per event on stdout.
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { consumeAmqp } from '../src/index.js';
import { connectAmqp } from './brokers.js';

interface Rev10ChildConfig {
  /** `async-report`: onMessage is async and rejects; `held-shutdown`: stop and close while a failed message is held. */
  mode: 'async-report' | 'held-shutdown';
  queue: string;
  prefix: string;
}

const config = JSON.parse(process.argv[2] ?? '{}') as Rev10ChildConfig;
const say = (event: Record<string, unknown>) =>
  process.stdout.write(`${JSON.stringify({ ...event, at: Date.now() })}\n`);
// Bound the child whatever happens: the parent also kills it.
setTimeout(() => process.exit(7), 120_000).unref();

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
const store = createRedisStore({ client: redis, keyPrefix: config.prefix });
const connection = await connectAmqp();
connection.on('error', () => undefined);
const channel = await connection.createChannel();
channel.on('error', () => undefined);
await channel.assertQueue(config.queue, { durable: false });

let settled!: () => void;
const firstReport = new Promise<void>((resolve) => {
  settled = resolve;
});

if (config.mode === 'async-report') {
  await consumeAmqp({
    store,
    channel,
    queue: config.queue,
    retryDelayMs: 100,
    handler: async () => ({ ok: true }),
    // An async listener (assignable to `(report) => void`) that fails.
    onMessage: async (report) => {
      say({ type: 'report', status: report.status });
      settled();
      throw new Error('the metrics backend is down');
    },
  });
  channel.sendToQueue(config.queue, Buffer.from('{"n":1}'), { messageId: 'm-1' });
  await firstReport;
  // Still alive a while later? Then the rejection did not kill the process.
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  say({ type: 'alive' });
  await connection.close().catch(() => undefined);
  redis.disconnect();
} else {
  const consumer = await consumeAmqp({
    store,
    channel,
    queue: config.queue,
    // A failed message is held a minute before it is requeued.
    retryDelayMs: 60_000,
    handler: async () => {
      throw new Error('downstream is down');
    },
    onMessage: (report) => {
      say({ type: 'report', status: report.status });
      settled();
    },
  });
  channel.sendToQueue(config.queue, Buffer.from('{"n":1}'), { messageId: 'm-1' });
  await firstReport;
  // The documented clean shutdown: stop, then close the connection and the store's client.
  await consumer.stop(200);
  await connection.close().catch(() => undefined);
  redis.disconnect();
  say({ type: 'closed' });
  // Nothing of ours is left: the process should now exit by itself.
}
