import { createServer, type Server, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { redisClientOptions, reportConnectionChanges } from '../src/stores/redis-connection.js';
import { startOwnRedis } from './own-redis.js';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * A minimal RESP server that answers like a Redis loading its data set for `loadingMs`
 * after it starts: `INFO` says `loading:1` (ETA 1 s), then `loading:0`. Counts the INFOs
 * it answered while loading.
 */
async function loadingRedis(loadingMs: number) {
  const startedAt = Date.now();
  const seen = { infosWhileLoading: 0 };
  const sockets = new Set<Socket>();
  const bulk = (text: string) => `$${Buffer.byteLength(text)}\r\n${text}\r\n`;
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let buffer = '';
    socket.on('data', (data) => {
      buffer += data.toString();
      // One reply per complete RESP array: `*N\r\n` then N bulk strings.
      for (;;) {
        const lines = buffer.split('\r\n');
        const count = Number(lines[0]?.slice(1));
        if (!(count > 0) || lines.length < 1 + 2 * count + 1) return;
        const args = Array.from({ length: count }, (_, i) => lines[2 + 2 * i] ?? '');
        buffer = lines.slice(1 + 2 * count).join('\r\n');
        const command = args[0]?.toUpperCase();
        if (command === 'INFO') {
          const loading = Date.now() - startedAt < loadingMs;
          if (loading) seen.infosWhileLoading += 1;
          socket.write(bulk(loading ? 'loading:1\r\nloading_eta_seconds:1\r\n' : 'loading:0\r\n'));
        } else if (command === 'PING') socket.write('+PONG\r\n');
        else socket.write('+OK\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('the app Redis client', () => {
  // ioredis waits max(1 s, the ETA) before asking a loading Redis again (its default
  // maxLoadingRetryTime is 10 s): a client that reconnected a moment before Redis finished
  // loading its AOF stayed unready, and answered 503, for a second or more after Redis was.
  it('asks a loading Redis again every few tens of ms, not once a second', async () => {
    const fake = await loadingRedis(600);
    cleanups.push(fake.close);
    const client = new Redis(`redis://127.0.0.1:${fake.port}`, redisClientOptions(1_000));
    client.on('error', () => undefined);
    cleanups.push(() => client.disconnect());
    await client.connect();
    expect(await client.ping()).toBe('PONG');
    // One INFO per recheck while loading: with the 1 s default there is room for one only.
    expect(fake.seen.infosWhileLoading).toBeGreaterThanOrEqual(3);
  });

  it('reports each outage once: lost, then ready again', async () => {
    const redis = await startOwnRedis();
    cleanups.push(() => redis.stop());
    const client = new Redis(redis.url, redisClientOptions(1_000));
    client.on('error', () => undefined);
    cleanups.push(() => client.disconnect());
    const lines: string[] = [];
    const stop = reportConnectionChanges(client, {
      lost: (message) => lines.push(`lost: ${message}`),
      back: (message) => lines.push(`back: ${message}`),
    });
    await client.connect();
    await redis.kill();
    // Several reconnection attempts fail meanwhile; each outage is reported once.
    await sleep(1_500);
    await redis.restart();
    while (client.status !== 'ready') await sleep(20);
    stop();
    expect(lines).toEqual([
      expect.stringMatching(/^lost: Redis connection lost.*; reconnecting$/),
      expect.stringMatching(/^back: Redis connection ready again after \d+\.\d s$/),
    ]);
  });
});
