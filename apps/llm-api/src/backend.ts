import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { IdempotencyStore } from '@idem/core';
import { createDynamoDbStore } from '@idem/store-dynamodb';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisStore } from '@idem/store-redis';
import { Redis } from 'ioredis';
import type { StoreConfig } from './config.js';
import { createDynamoDbLedger } from './ledger/dynamodb-ledger.js';
import { createMemoryLedger, type Ledger } from './ledger/ledger.js';
import { createRedisLedger } from './ledger/redis-ledger.js';

/** The idempotency store and the ledger of one configuration, and how to close them. */
export interface Backend {
  kind: StoreConfig['kind'];
  store: IdempotencyStore;
  ledger: Ledger;
  close(): Promise<void>;
}

/** Raised when the configured store cannot be reached or set up at start. */
export class BackendError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BackendError';
  }
}

/**
 * Connects to the configured store and checks it answers, so an unreachable Redis or a
 * missing table fails the start, not the first request.
 */
export async function openBackend(config: StoreConfig, prefix: string): Promise<Backend> {
  if (config.kind === 'memory') {
    const store = createMemoryStore();
    return {
      kind: 'memory',
      store,
      ledger: createMemoryLedger(),
      close: () => store.close(),
    };
  }
  if (config.kind === 'redis') {
    const client = new Redis(config.url, {
      lazyConnect: true,
      maxRetriesPerRequest: 2,
      connectTimeout: 3_000,
      // Fail the start instead of retrying for ever when Redis is not there.
      retryStrategy: (times) => (times > 20 ? null : Math.min(times * 100, 1_000)),
    });
    client.on('error', () => {
      // Reported through failed commands (503 from @idem/http); no unhandled 'error' event.
    });
    try {
      await client.connect();
      await client.ping();
    } catch (error) {
      client.disconnect();
      throw new BackendError(
        `Redis at ${config.url.replace(/:[^:@/]*@/, ':***@')} does not answer: ${String((error as Error).message ?? error)}`,
        { cause: error },
      );
    }
    return {
      kind: 'redis',
      store: createRedisStore({ client, keyPrefix: `${prefix}idem:` }),
      ledger: createRedisLedger(client, prefix),
      close: async () => {
        await client.quit().catch(() => client.disconnect());
      },
    };
  }
  const client = new DynamoDBClient({
    region: config.region,
    ...(config.endpoint
      ? {
          endpoint: config.endpoint,
          // DynamoDB Local accepts any credentials; use the environment's when present.
          ...(process.env.AWS_ACCESS_KEY_ID
            ? {}
            : { credentials: { accessKeyId: 'local', secretAccessKey: 'local' } }),
        }
      : {}),
  });
  const store = createDynamoDbStore({
    client,
    tableName: config.table,
    keyPrefix: `${prefix}idem#`,
  });
  try {
    await store.ensureTable({ timeoutMs: 60_000 });
  } catch (error) {
    client.destroy();
    throw new BackendError(
      `DynamoDB table ${config.table}${config.endpoint ? ` at ${config.endpoint}` : ''} is not usable: ${String((error as Error).message ?? error)}`,
      { cause: error },
    );
  }
  return {
    kind: 'dynamodb',
    store,
    ledger: createDynamoDbLedger(client, config.table, prefix),
    close: async () => {
      client.destroy();
    },
  };
}
