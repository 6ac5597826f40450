/**
 * rev20: what a Redis restart that loses its data (no persistence) does to the fence of a
 * key whose execution is still running. core's README said of this very case ("the store
 * loses an acknowledged write (a Redis without persistence restarting ...)") that "the
 * takeover gets a higher fence: a downstream write that checks the fence commits at most
 * once". It does not: the record and its fence memory are lost together, so the next
 * acquisition starts again at fence 1, the fence the running execution holds, under a new
 * originId. A fenced downstream cannot tell the two executions apart.
 */
import { createIdempotency } from '@idem/core';
import type { Redis } from 'ioredis';
import { afterAll, expect, it } from 'vitest';
import { createRedisStore } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  restartRedisServer,
  signalRedisServer,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';
import { connectPort } from './targets.js';

redisBinariesAvailable();

const servers: RedisServer[] = [];
const clients: Redis[] = [];
afterAll(async () => {
  for (const client of clients) client.disconnect();
  await Promise.all(servers.map(stopRedisServer));
});

it('a restart without persistence mid-execution: the next execution gets the running one’s fence again', async () => {
  let server = await startRedisServer([]);
  servers.push(server);
  const client = await connectPort(server.port);
  clients.push(client);
  const store = createRedisStore({ client });
  const idem = createIdempotency({ store, leaseMs: 3_000, storeTimeoutMs: 2_000 });
  const request = { key: 'rev20-fence', scope: 'global' };

  let releaseFirst!: () => void;
  const firstMayEnd = new Promise<void>((resolve) => (releaseFirst = resolve));
  let first: { fence: number; originId: string } | undefined;
  const running = idem
    .execute(request, async ({ fence, originId }) => {
      first = { fence, originId };
      await firstMayEnd;
      return 'first';
    })
    .catch((error: unknown) => error);
  const until = Date.now() + 5_000;
  while (first === undefined && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
  expect(first?.fence).toBe(1);

  // kill -9 and restart on the same port and dir, nothing on disk.
  await signalRedisServer(server, 'SIGKILL');
  servers.splice(servers.indexOf(server), 1);
  server = await restartRedisServer(server);
  servers.push(server);
  const back = Date.now() + 10_000;
  while (client.status !== 'ready' && Date.now() < back)
    await new Promise((r) => setTimeout(r, 50));

  const second = (await idem.execute(request, async ({ fence, originId }) => ({
    fence,
    originId,
  }))) as {
    value: { fence: number; originId: string };
  };
  releaseFirst();
  await running;
  // What happens: the fence repeats (and the logical request is a new one). core's README
  // now says so; it claimed a higher fence.
  expect(second.value.fence).toBe(first!.fence);
  expect(second.value.originId).not.toBe(first!.originId);
});
