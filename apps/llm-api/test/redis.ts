import { Redis } from 'ioredis';

/** The Redis the tests use: REDIS_URL, or a local one on the default port. */
export const REDIS_URL = process.env.REDIS_URL?.trim() || 'redis://127.0.0.1:6379';

/** A random key prefix, so no test sees another's leftovers. */
export const randomPrefix = () => `llm-api-test:${crypto.randomUUID().slice(0, 8)}:`;

/**
 * Connects to the test Redis or fails with a message that says how to provide one: the
 * Redis configuration is part of the suite and never skipped silently.
 */
export async function connectRedis(): Promise<Redis> {
  const client = new Redis(REDIS_URL, {
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.ping();
  } catch (error) {
    client.disconnect();
    throw new Error(
      `These tests need Redis at ${REDIS_URL} (${String(error)}). Start one (redis-server, or ` +
        '`bash scripts/bootstrap.sh --services`) or point REDIS_URL at one.',
    );
  }
  return client;
}

/** Deletes every key under `prefix`. */
export async function deletePrefix(client: Redis, prefix: string): Promise<void> {
  const keys = await client.keys(`${prefix}*`);
  if (keys.length > 0) await client.del(...keys);
}
