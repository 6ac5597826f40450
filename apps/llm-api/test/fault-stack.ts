import { afterAll, beforeAll } from 'vitest';
import { parseConfig } from '../src/config.js';
import { type RunningServer, startServer } from '../src/server.js';
import { type OwnRedis, startOwnRedis } from './own-redis.js';
import { randomPrefix } from './redis.js';

/** The store timeout of the fault tests, in ms. */
export const STORE_TIMEOUT_MS = 1_000;
/** The client's own limit on one request: a request the server holds longer fails the test. */
export const BOUND_MS = 4 * STORE_TIMEOUT_MS;
/** The lease of the fault tests, in ms. */
export const LEASE_MS = 3_000;

/** The app (in this process, on a loopback port) on a redis-server of the test's own. */
export interface FaultStack {
  redis: OwnRedis;
  server: RunningServer;
  close(): Promise<void>;
}

/** Starts an own redis-server and the app on it, with 3 s leases and a 1 s store timeout. */
export async function startFaultStack(): Promise<FaultStack> {
  const redis = await startOwnRedis();
  try {
    const server = await startServer(
      parseConfig({
        PORT: '0',
        REDIS_URL: redis.url,
        IDEM_KEY_PREFIX: randomPrefix(),
        IDEM_LEASE_MS: String(LEASE_MS),
        IDEM_STORE_TIMEOUT_MS: String(STORE_TIMEOUT_MS),
        MODEL_CHUNK_DELAY_MS: '1',
      }),
    );
    return {
      redis,
      server,
      close: async () => {
        redis.thaw();
        await server.close();
        await redis.stop();
      },
    };
  } catch (error) {
    await redis.stop();
    throw error;
  }
}

/**
 * Starts a {@link FaultStack} before the tests of the enclosing `describe` and closes it
 * after them; returns a getter for it.
 */
export function useFaultStack(): () => FaultStack {
  let stack: FaultStack | undefined;
  beforeAll(async () => {
    stack = await startFaultStack();
  });
  afterAll(async () => {
    await stack?.close();
  });
  return () => {
    if (!stack) throw new Error('The fault stack did not start');
    return stack;
  };
}

/** Waits `ms`. */
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
