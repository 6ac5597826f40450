// A consumer in its own process for test/rev33a-exit.test.ts: its handler never settles (a
// promise nothing resolves: nothing of its own keeps the process alive). Once it runs (and on
// JetStream once a resend of its message is held behind it), stop(300), the connections
// closed, the IPC channel too: the process is left to exit by itself.
// argv[2]: JSON { broker: 'amqp' | 'jetstream', redisUrl, queue?, stream?, prefix }.
import { createRedisStore } from '@idem/store-redis';
import amqp from 'amqplib';
import { Redis } from 'ioredis';
import { connect } from 'nats';
import { consumeAmqp, consumeJetStream, type IdempotentConsumer } from '../src/index.js';
import { AMQP_URL, NATS_URL } from './brokers.js';

const config = JSON.parse(process.argv[2] ?? '{}') as {
  broker: 'amqp' | 'jetstream';
  redisUrl: string;
  queue?: string;
  stream?: string;
  prefix: string;
};
const send = (event: Record<string, unknown>) => process.send?.(event);
const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: 2 });
redis.on('error', () => undefined);
const store = createRedisStore({ client: redis, keyPrefix: config.prefix });
let held!: () => void;
const heldOne = new Promise<void>((resolve) => {
  held = resolve;
});
const common = {
  store,
  handler: async () => {
    send({ type: 'running' });
    if (config.broker === 'amqp') held();
    return new Promise<string>(() => {});
  },
  onEvent: (event: { type: string }) => {
    if (event.type === 'conflict') held();
  },
};
let consumer: IdempotentConsumer;
let close: () => Promise<unknown>;
if (config.broker === 'amqp') {
  const connection = await amqp.connect(AMQP_URL, { timeout: 10_000 });
  consumer = await consumeAmqp({
    ...common,
    channel: await connection.createChannel(),
    queue: config.queue as string,
  });
  close = () => connection.close();
} else {
  const nc = await connect({ servers: NATS_URL });
  consumer = await consumeJetStream({
    ...common,
    consumer: await nc.jetstream().consumers.get(config.stream as string, 'w'),
    key: () => 'same',
    concurrency: 2,
  });
  close = () => nc.close();
}
send({ type: 'ready' });
await heldOne;
send({ type: 'held' });
await consumer.stop(300);
await close().catch(() => undefined);
redis.disconnect();
send({ type: 'closed' });
process.disconnect?.();
