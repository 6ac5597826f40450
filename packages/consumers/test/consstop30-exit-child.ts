// A RabbitMQ consumer in its own process for test/consstop30-exit.test.ts: its handler runs
// once the test has frozen the store (it asks over IPC), so the final write fails and goes on
// in the background; then stop(500), the connections closed, the IPC channel too, and the
// process is left to exit by itself. argv[2]: JSON { redisUrl, queue, prefix }.
import { createRedisStore } from '@idem/store-redis';
import amqp from 'amqplib';
import { Redis } from 'ioredis';
import { consumeAmqp } from '../src/index.js';
import { AMQP_URL } from './brokers.js';

const config = JSON.parse(process.argv[2] ?? '{}') as {
  redisUrl: string;
  queue: string;
  prefix: string;
};
const send = (event: Record<string, unknown>) => process.send?.(event);
const frozen = new Promise<void>((resolve) => process.once('message', () => resolve()));
const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: null });
redis.on('error', () => undefined);
const connection = await amqp.connect(AMQP_URL, { timeout: 10_000 });
let completeErrors = 0;
let reported!: () => void;
const done = new Promise<void>((resolve) => {
  reported = resolve;
});
const consumer = await consumeAmqp({
  channel: await connection.createChannel(),
  queue: config.queue,
  store: createRedisStore({ client: redis, keyPrefix: config.prefix }),
  storeTimeoutMs: 300,
  completionWaitMs: 300,
  leaseMs: 30_000,
  handler: async () => {
    send({ type: 'running' });
    await frozen;
    return 'child';
  },
  onMessage: (report) => {
    send({
      type: 'report',
      status: report.status,
      code: (report.error as { code?: unknown })?.code,
    });
    reported();
  },
  onEvent: (event) => {
    if (event.type === 'store_error' && event.method === 'complete') completeErrors += 1;
  },
});
send({ type: 'ready' });
await done;
await consumer.stop(500);
const atStop = completeErrors;
await connection.close().catch(() => undefined);
redis.disconnect();
// The write is still retried (on a closed client now, failing at once), up to maxHoldMs.
await new Promise((resolve) => setTimeout(resolve, 300));
send({ type: 'closed', retriedAfterStop: completeErrors > atStop });
process.disconnect?.();
