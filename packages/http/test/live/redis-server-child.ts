// One of the two server processes of the Redis live-stream tests: the SSE test app on a
// Redis store and the Redis live-stream channel, on 127.0.0.1 (a free port); under `/t/` the
// same app with a short lease and no heartbeat (for takeovers), on its own key prefix.
// Prints "listening on <url>" once it listens; exits on SIGTERM.
import { createRedisLiveStreams, createRedisStore } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { sseApp } from './sse-app.js';
import { serveWeb } from './web-server.js';

const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = process.env.IDEM_TEST_PREFIX ?? 'idem-live-test:';
const options = { maxRetriesPerRequest: 1 };
const client = new Redis(url, options);
const blockingClient = new Redis(url, options);
function appOn(keyPrefix: string, short: boolean) {
  const store = createRedisStore({ client, keyPrefix });
  const channel = createRedisLiveStreams({
    client,
    blockingClient,
    store,
    keyPrefix: `${keyPrefix}live:`,
    endGraceMs: 2_000,
    blockMs: 500,
  });
  return sseApp(store, {
    ...(short ? { leaseMs: 1_500, heartbeatMs: false as const } : {}),
    liveStreams: { channel, stallMs: 2_000, blockMs: 500 },
  });
}
const normal = appOn(prefix, false);
const short = appOn(`${prefix}t:`, true);
const app = {
  handle: (request: Request) => {
    const url = new URL(request.url);
    if (!url.pathname.startsWith('/t/')) return normal.handle(request);
    url.pathname = url.pathname.slice(2);
    return short.handle(new Request(url, request));
  },
};
const server = await serveWeb(app.handle);
process.stdout.write(`listening on ${server.url}\n`);
process.once('SIGTERM', () => {
  void server.close().then(() => {
    client.disconnect();
    blockingClient.disconnect();
    process.exit(0);
  });
});
