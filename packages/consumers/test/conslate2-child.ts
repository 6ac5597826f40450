// A JetStream consumer in its own process for test/conslate2-jetstream-stop.test.ts: once its
// key function was asked for both messages (it never answers), it calls stop(stopMs), closes
// its connections and exits, as an application's shutdown does. argv[2]: JSON ChildConfig.
// Reports over IPC.
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { connect } from 'nats';
import { consumeJetStream } from '../src/index.js';

interface ChildConfig {
  stream: string;
  prefix: string;
  /** The NATS port (a proxy of the test's). */
  port: number;
  stopMs: number;
}

const config = JSON.parse(process.argv[2] ?? '{}') as ChildConfig;
const send = (event: Record<string, unknown>) => process.send?.(event);
// Bounded whatever happens: the parent also kills it.
setTimeout(() => process.exit(7), 100_000).unref();

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
const nc = await connect({ servers: `127.0.0.1:${config.port}`, timeout: 10_000 });
// Both messages reached a key function (concurrency 2): both are then given back at the stop.
let asked = 0;
let bothAsked!: () => void;
const keysAsked = new Promise<void>((resolve) => {
  bothAsked = resolve;
});
const consumer = await consumeJetStream({
  store: createRedisStore({ client: redis, keyPrefix: config.prefix }),
  consumer: await nc.jetstream().consumers.get(config.stream, 'w'),
  concurrency: 2,
  // Looked up in a database that never answers.
  key: () => {
    asked += 1;
    if (asked === 2) bothAsked();
    return new Promise<string>(() => {});
  },
  handler: async (message) => {
    send({ type: 'ran', data: Buffer.from(message.data).toString() });
    return 'child';
  },
  onMessage: (report) =>
    send({
      type: 'report',
      status: report.status,
      code: (report.error as { code?: unknown } | undefined)?.code,
    }),
});
await keysAsked;
await consumer.stop(config.stopMs);
// The usual shutdown once stop() returned: the connections are closed, the process exits.
await nc.close().catch(() => undefined);
redis.disconnect();
process.send?.({ type: 'stopped' }, () => process.exit(0));
