// A consumer in its own process, killed by the tests (SIGKILL) in the middle of a message.
// argv[2]: JSON ChildConfig. Reports to the parent over IPC; exits when the IPC channel closes.
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { createFencedLedger, REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { consumeAmqp, consumeJetStream, type IdempotentConsumer } from '../src/index.js';
import { connectAmqp, connectNats } from './brokers.js';

export interface ChildConfig {
  broker: 'amqp' | 'nats';
  /** Queue, or stream + durable consumer name. */
  queue: string;
  durable?: string;
  prefix: string;
  leaseMs: number;
  workMs: number;
  /** Messages in flight in this consumer. */
  prefetch: number;
  /** `handler`: the Nth handler run never ends (the parent kills us); `before-ack`: we kill ourselves once the Nth outcome is recorded, before the ack. */
  kill?: { mode: 'handler' | 'before-ack'; at: number };
}

/** What the child tells its parent. */
export type ChildEvent =
  | { type: 'ready' }
  | { type: 'start'; id: string; fence: number; n: number }
  | { type: 'report'; id: string; status: string };

const config = JSON.parse(process.argv[2] ?? '{}') as ChildConfig;
const send = (event: ChildEvent) => process.send?.(event);
const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
const store = createRedisStore({ client: redis, keyPrefix: config.prefix });
const ledger = createFencedLedger(redis, `${config.prefix}ledger:`);
let runs = 0;
let recorded = 0;

async function handler(data: Uint8Array, ctx: { fence: number }) {
  const { id } = JSON.parse(Buffer.from(data).toString()) as { id: string };
  runs += 1;
  send({ type: 'start', id, fence: ctx.fence, n: runs });
  if (config.kill?.mode === 'handler' && runs === config.kill.at) await new Promise(() => {});
  await sleep(config.workMs);
  await ledger.write(id, ctx.fence, `pid ${process.pid}`);
  return { id };
}

function onReport(id: string, status: string) {
  send({ type: 'report', id, status });
  if (status === 'processed') recorded += 1;
  // The outcome is recorded and the ack not sent yet: die here.
  if (config.kill?.mode === 'before-ack' && status === 'processed' && recorded === config.kill.at)
    process.kill(process.pid, 'SIGKILL');
}

const idOf = (data: Uint8Array) => (JSON.parse(Buffer.from(data).toString()) as { id: string }).id;
let consumer: IdempotentConsumer;
let close: () => Promise<unknown>;
const engine = { store, leaseMs: config.leaseMs, retryDelayMs: 300 };
if (config.broker === 'amqp') {
  const connection = await connectAmqp();
  const channel = await connection.createChannel();
  consumer = await consumeAmqp({
    ...engine,
    channel,
    queue: config.queue,
    prefetch: config.prefetch,
    handler: (message, ctx) => handler(message.content, ctx),
    onMessage: (r) => onReport(idOf(r.message.content), r.status),
  });
  close = () => connection.close();
} else {
  const nc = await connectNats();
  const js = nc.jetstream();
  consumer = await consumeJetStream({
    ...engine,
    consumer: await js.consumers.get(config.queue, config.durable ?? ''),
    concurrency: config.prefetch,
    workingIntervalMs: 500,
    handler: (message, ctx) => handler(message.data, ctx),
    onMessage: (r) => onReport(idOf(r.message.data), r.status),
  });
  close = () => nc.close();
}
send({ type: 'ready' });
process.on('disconnect', async () => {
  await consumer.stop(5_000);
  await close().catch(() => {});
  redis.disconnect();
  process.exit(0);
});
