import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  decodeOutcome,
  type IdempotencyStore,
  type StoredOutcome,
  StoreUnavailableError,
} from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';

/** A kind of store the scenarios run on. */
export interface StoreKind {
  name: string;
  /** Called once per `describe`; returns a factory of fresh stores and a teardown. */
  setup(): Promise<{ create(): IdempotencyStore; close(): Promise<void> }>;
}

/** In-process stores (`@idem/store-memory`), one per scenario. */
export function memoryStores(): StoreKind {
  return {
    name: 'memory',
    async setup() {
      return { create: () => createMemoryStore({ sweepIntervalMs: 0 }), close: async () => {} };
    },
  };
}

/**
 * Stores on a real Redis (`@idem/store-redis` with `ioredis`, optional peer dependencies),
 * one random key prefix per scenario, deleted afterwards. Fails with a message that says
 * how to provide Redis when none answers; never skips.
 * @param options.url @default process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
 */
export function redisStores(options: { url?: string } = {}): StoreKind {
  const url = options.url ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  return {
    name: 'redis',
    async setup() {
      const [{ Redis }, { createRedisStore }] = await Promise.all([
        import('ioredis'),
        import('@idem/store-redis'),
      ]);
      const client = new Redis(url, {
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
          `The HTTP conformance suite on Redis needs a Redis at ${url} (${String(error)}). ` +
            'Start one (redis-server, or `bash scripts/bootstrap.sh --services`) or set REDIS_URL.',
        );
      }
      // Every scenario's prefix sits under this run's: one SCAN at the end finds them all
      // (a KEYS per scenario read the whole keyspace each time, slow on a shared Redis).
      const runPrefix = `idem-http-conformance:${randomBytes(6).toString('hex')}:`;
      let scenarios = 0;
      return {
        create() {
          scenarios += 1;
          return createRedisStore({ client, keyPrefix: `${runPrefix}${scenarios}:` });
        },
        async close() {
          let cursor = '0';
          do {
            const [next, keys] = await client.scan(cursor, 'MATCH', `${runPrefix}*`, 'COUNT', 1000);
            cursor = next;
            if (keys.length > 0) await client.unlink(...keys);
          } while (cursor !== '0');
          await client.quit();
        },
      };
    },
  };
}

/** Faults a {@link spyStore} injects. */
export interface StoreFaults {
  /** Delays every `complete` by this many ms (a slow write). */
  completeDelayMs?: number;
  /** Delays every call by this many ms (a slow store). */
  callDelayMs?: number;
  /** Every `complete` fails as an unreachable store would. */
  failComplete?: boolean;
}

/** A store wrapper that counts calls and keeps what `complete` wrote, decoded. */
export interface SpiedStore {
  store: IdempotencyStore;
  calls: { acquire: number; complete: number; release: number; extend: number; get: number };
  /** Outcomes that `complete` stored, in order. */
  completed: StoredOutcome[];
  /** The faults in force: a scenario may change them while it runs (the store comes back). */
  faults: StoreFaults;
}

/** Wraps `inner`: counts its calls, keeps the completed outcomes, injects `faults`. */
export function spyStore(inner: IdempotencyStore, initial: StoreFaults = {}): SpiedStore {
  // A copy: a scenario that changes its faults must not change them for the next store kind.
  const faults: StoreFaults = { ...initial };
  const calls = { acquire: 0, complete: 0, release: 0, extend: 0, get: 0 };
  const completed: StoredOutcome[] = [];
  const slow = async () => {
    if (faults.callDelayMs) await sleep(faults.callDelayMs);
  };
  const store: IdempotencyStore = {
    capabilities: inner.capabilities,
    acquire: async (input, context) => {
      calls.acquire++;
      await slow();
      return inner.acquire(input, context);
    },
    complete: async (input, context) => {
      calls.complete++;
      await slow();
      // A slow write makes a response that ends before its outcome is stored visible.
      if (faults.completeDelayMs) await sleep(faults.completeDelayMs);
      if (faults.failComplete)
        throw new StoreUnavailableError('connection reset (injected by the suite)');
      const result = await inner.complete(input, context);
      if (result.ok) completed.push(decodeOutcome(input.outcome));
      return result;
    },
    release: async (input, context) => {
      calls.release++;
      await slow();
      return inner.release(input, context);
    },
    extend: async (input, context) => {
      calls.extend++;
      await slow();
      return inner.extend(input, context);
    },
    get: async (key) => {
      calls.get++;
      await slow();
      return inner.get(key);
    },
  };
  return { store, calls, completed, faults };
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
