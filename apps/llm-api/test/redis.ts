import type { Redis } from 'ioredis';
import { connectRedis as connectWithAppOptions } from '../src/stores/redis-connection.js';

/** The Redis the tests use: REDIS_URL, or a local one on the default port. */
export const REDIS_URL = process.env.REDIS_URL?.trim() || 'redis://127.0.0.1:6379';

/** A random key prefix, so no test sees another's leftovers. */
export const randomPrefix = () => `llm-api-test:${crypto.randomUUID().slice(0, 8)}:`;

/**
 * Connects to the test Redis or fails with a message that says how to provide one: the
 * Redis configuration is part of the suite and never skipped silently.
 */
export async function connectRedis(): Promise<Redis> {
  try {
    // The app's own client options: it reconnects for as long as the test runs.
    return await connectWithAppOptions(REDIS_URL, 2_000);
  } catch (error) {
    throw new Error(
      `These tests need Redis at ${REDIS_URL} (${String(error)}). Start one (redis-server, or ` +
        '`bash scripts/bootstrap.sh --services`) or point REDIS_URL at one.',
    );
  }
}

/** Deletes every key under `prefix`. */
export async function deletePrefix(client: Redis, prefix: string): Promise<void> {
  const keys = await client.keys(`${prefix}*`);
  if (keys.length > 0) await client.del(...keys);
}
