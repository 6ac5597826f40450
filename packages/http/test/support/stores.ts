import { randomBytes } from 'node:crypto';
import { decodeOutcome, type IdempotencyStore, type StoredOutcome } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisStore } from '@idem/store-redis';
import { Redis } from 'ioredis';

/** A kind of store the HTTP scenarios run against. */
export interface StoreKind {
  name: string;
  /** Called once per test file; returns a factory of fresh stores and a teardown. */
  setup(): Promise<{ create(): IdempotencyStore; close(): Promise<void> }>;
}

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export const memoryKind: StoreKind = {
  name: 'memory',
  async setup() {
    return { create: () => createMemoryStore({ sweepIntervalMs: 0 }), close: async () => {} };
  },
};

export const redisKind: StoreKind = {
  name: 'redis',
  async setup() {
    const client = new Redis(REDIS_URL, {
      lazyConnect: true,
      maxRetriesPerRequest: 1,
      enableOfflineQueue: false,
    });
    try {
      await client.connect();
      await client.ping();
    } catch (error) {
      client.disconnect();
      throw new Error(
        `These tests need Redis at ${REDIS_URL} (${String(error)}). ` +
          'Start one (redis-server, or `bash scripts/bootstrap.sh --services`) or set REDIS_URL.',
      );
    }
    const prefixes: string[] = [];
    return {
      create() {
        const keyPrefix = `idem-http-test:${randomBytes(6).toString('hex')}:`;
        prefixes.push(keyPrefix);
        return createRedisStore({ client, keyPrefix });
      },
      async close() {
        for (const prefix of prefixes) {
          const keys = await client.keys(`${prefix}*`);
          if (keys.length > 0) await client.del(...keys);
        }
        await client.quit();
      },
    };
  },
};

export const STORE_KINDS: readonly StoreKind[] = [memoryKind, redisKind];

/** A store wrapper that counts calls and keeps what `complete` wrote, decoded. */
export interface SpiedStore {
  store: IdempotencyStore;
  calls: { acquire: number; complete: number; release: number; extend: number };
  completed: StoredOutcome[];
}

export function spyStore(
  inner: IdempotencyStore,
  options: { completeDelayMs?: number } = {},
): SpiedStore {
  const calls = { acquire: 0, complete: 0, release: 0, extend: 0 };
  const completed: StoredOutcome[] = [];
  const store: IdempotencyStore = {
    capabilities: inner.capabilities,
    acquire: (input) => {
      calls.acquire++;
      return inner.acquire(input);
    },
    complete: async (input) => {
      calls.complete++;
      // A slow write makes a response that ends before its outcome is stored visible.
      if (options.completeDelayMs)
        await new Promise((resolve) => setTimeout(resolve, options.completeDelayMs));
      const result = await inner.complete(input);
      if (result.ok) completed.push(decodeOutcome(input.outcome));
      return result;
    },
    release: (input) => {
      calls.release++;
      return inner.release(input);
    },
    extend: (input) => {
      calls.extend++;
      return inner.extend(input);
    },
    get: (key) => inner.get(key),
  };
  return { store, calls, completed };
}

/** A store whose every call fails at once (refused) or never answers (a black hole). */
export function downStore(mode: 'failing' | 'hanging'): IdempotencyStore {
  const fail =
    mode === 'failing'
      ? async (): Promise<never> => {
          throw new Error('connect ECONNREFUSED 127.0.0.1:1');
        }
      : () => new Promise<never>(() => {});
  return {
    capabilities: { clock: 'server' },
    acquire: fail,
    complete: fail,
    release: fail,
    extend: fail,
    get: fail,
  };
}
