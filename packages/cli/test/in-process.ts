import { randomBytes } from 'node:crypto';
import { createServer, type Socket } from 'node:net';
import { recommendedRedisOptions } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { afterAll, beforeAll } from 'vitest';
import { runCli } from '../src/index.js';

/** The Redis the tests use. */
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** `runCli(argv)` in this process: its exit code and every line it wrote (stdout and stderr). */
export async function runInProcess(...argv: string[]): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const code = await runCli(argv, { out: (l) => lines.push(l), err: (l) => lines.push(l) });
  return { code, lines };
}

/** A server on 127.0.0.1 that accepts connections and says nothing: a silent store. */
export interface SilentServer {
  port: number;
  close(): Promise<void>;
}

/** Starts a {@link SilentServer}: the command's time limit must end whatever talks to it. */
export async function silentServer(): Promise<SilentServer> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The shared Redis (`REDIS_URL`) under a key prefix of this file's own, emptied after it. */
export function redisUnderPrefix(name: string): { client(): Redis; prefix: string } {
  let client: Redis | undefined;
  const prefix = `${name}:${randomBytes(4).toString('hex')}:`;
  beforeAll(async () => {
    client = new Redis(REDIS_URL, { ...recommendedRedisOptions(), lazyConnect: true });
    await client.connect();
  });
  afterAll(async () => {
    if (!client) return;
    const keys = await client.keys(`${prefix}*`);
    if (keys.length > 0) await client.del(...keys);
    client.disconnect();
  });
  return {
    prefix,
    client: () => {
      if (!client) throw new Error('Redis is not connected yet');
      return client;
    },
  };
}
