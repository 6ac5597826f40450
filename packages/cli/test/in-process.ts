import { randomBytes } from 'node:crypto';
import { createServer, type Socket } from 'node:net';
import { recommendedPoolConfig } from '@idem/store-postgres';
import { recommendedRedisOptions } from '@idem/store-redis';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll } from 'vitest';
import { runCli } from '../src/index.js';

/** The Redis the tests use. */
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** The PostgreSQL the tests use. */
export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/**
 * A pool on {@link DATABASE_URL} and a table name of this file's own (`<name>_<random>`); the
 * table and the store's functions are dropped and the pool ended after the file.
 */
export function postgresTable(name: string): { pool: pg.Pool; table: string } {
  const pool = new pg.Pool({ connectionString: DATABASE_URL, ...recommendedPoolConfig(), max: 2 });
  pool.on('error', () => {});
  const table = `${name}_${randomBytes(5).toString('hex')}`;
  afterAll(async () => {
    await pool.query(`DROP TABLE IF EXISTS ${table} CASCADE`).catch(() => undefined);
    for (const fn of ['acquire', 'complete', 'release', 'extend'])
      await pool.query(`DROP FUNCTION IF EXISTS ${table}_${fn} CASCADE`).catch(() => undefined);
    await pool.end();
  });
  return { pool, table };
}

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
