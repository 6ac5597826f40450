// break32b: once the command gave up (`--timeout-ms`), it stays given up. Before the fix the
// work went on behind the answer: a store that opened late still got the command (a `delete`
// or `release` sent after the operator was told "gave up"), its connection was never closed,
// and the late result was printed too (two JSON objects under `--json`, where exactly one is
// promised; a "gave up" line followed by "deleted ...").
import { randomBytes } from 'node:crypto';
import { createServer, type Socket, connect as tcpConnect } from 'node:net';
import { createRedisStore } from '@idem/store-redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REDIS_URL, redisUnderPrefix, runInProcess } from './in-process.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const hex = () => randomBytes(32).toString('hex');
const DELAY_MS = 400;

/** A TCP proxy to Redis that holds everything the client sends for `DELAY_MS`: a slow store. */
function slowProxy() {
  const upstream = new URL(REDIS_URL);
  const sockets = new Set<Socket>();
  let connections = 0;
  const server = createServer((client) => {
    connections++;
    const server = tcpConnect(Number(upstream.port || 6379), upstream.hostname);
    for (const s of [client, server]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        client.destroy();
        server.destroy();
      });
    }
    client.on('data', (chunk) => {
      setTimeout(() => {
        if (!server.destroyed) server.write(chunk);
      }, DELAY_MS);
    });
    server.on('data', (chunk) => {
      if (!client.destroyed) client.write(chunk);
    });
  });
  return {
    listen: () => new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve)),
    url: () => `redis://127.0.0.1:${(server.address() as { port: number }).port}`,
    open: () => [...sockets].filter((s) => !s.destroyed).length,
    connections: () => connections,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('break32b: the CLI after --timeout-ms', () => {
  const redis = redisUnderPrefix('break32b-gaveup');
  const { prefix } = redis;
  const store = () => createRedisStore({ client: redis.client(), keyPrefix: prefix });
  const proxy = slowProxy();
  beforeAll(() => proxy.listen());
  afterAll(() => proxy.close());

  it('a delete the command gave up on before it was sent is never sent, nor printed', async () => {
    const key = hex();
    await store().acquire({
      key,
      owner: 'owner-live',
      fingerprint: 'fp',
      leaseMs: 60_000,
      retentionMs: 600_000,
    });
    const run = await runInProcess(
      'delete',
      key,
      '--storage-key',
      '--store',
      proxy.url(),
      '--prefix',
      prefix,
      '--force',
      '--json',
      '--timeout-ms',
      '100',
    );
    expect(run.code).toBe(1);
    // Long enough for the slow store to answer the open, the inspect and the delete.
    await sleep(DELAY_MS * 4);
    // One JSON object, the timeout; before the fix a second one followed: `deleted: true`.
    expect(run.lines).toHaveLength(1);
    expect(JSON.parse(run.lines[0] as string).error.code).toBe('timeout');
    // Before the fix: null, the live execution deleted after the command had given up.
    expect(await store().get(key)).toMatchObject({ status: 'in_progress', owner: 'owner-live' });
    // And the connection opened late is closed, not left open for ever.
    expect(proxy.open()).toBe(0);
  });
});
