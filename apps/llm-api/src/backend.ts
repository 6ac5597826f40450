import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { admitStore, createAdmission, type IdempotencyStore, type LiveStreams } from '@idem/core';
import { createDynamoDbStore } from '@idem/store-dynamodb';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisLiveStreams, createRedisStore } from '@idem/store-redis';
import type { StoreConfig } from './config.js';
import { admitLedger, boundLedger } from './ledger/bounded-ledger.js';
import { createDynamoDbLedger } from './ledger/dynamodb-ledger.js';
import { createMemoryLedger, type Ledger } from './ledger/ledger.js';
import { createRedisLedger } from './ledger/redis-ledger.js';
import { callWithin } from './stores/bounded-call.js';
import { createDynamoDbClient } from './stores/dynamodb-connection.js';
import { openPostgresBackend } from './stores/postgres-connection.js';
import { connectRedis } from './stores/redis-connection.js';
import { durabilityWarning, redisDurability } from './stores/redis-durability.js';

/** The idempotency store and the ledger of one configuration, and how to check and close them. */
export interface Backend {
  kind: StoreConfig['kind'];
  store: IdempotencyStore;
  /** Every call bounded by the store timeout; failures are `StoreUnavailableError`s. */
  ledger: Ledger;
  /**
   * One bounded round trip to the store (Redis PING, a DynamoDB GetItem); resolves when it
   * answered, throws `StoreUnavailableError` otherwise. Always resolves on the memory store.
   */
  ping(): Promise<void>;
  close(): Promise<void>;
  /**
   * Where streamed answers are published for a retry to attach to: Redis Streams on Redis (a
   * retry reaching another process attaches too); undefined elsewhere (the in-process
   * channel of @idem/http: a retry on the same process attaches, one on another gets 409).
   */
  liveStreams?: LiveStreams;
}

/** How {@link openBackend} talks to the store. */
export interface BackendOptions {
  /** Limit of every store call (idempotency store, ledger, readiness), in ms. @default 2_000 */
  timeoutMs?: number;
  /** Receives start-up warnings (e.g. a Redis that keeps nothing on disk). @default console.warn */
  warn?: (message: string) => void;
}

/** Raised when the configured store cannot be reached or set up at start. */
export class BackendError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BackendError';
  }
}

const redact = (url: string) => url.replace(/:[^:@/]*@/, ':***@');
const messageOf = (error: unknown) =>
  String(error instanceof Error ? error.message : (error ?? 'unknown error'));

/**
 * Connects to the configured store and checks it answers, so an unreachable Redis or a
 * missing table fails the start, not the first request. Once started, the clients reconnect
 * for the life of the process (see `stores/redis-connection.ts`) and every call is bounded.
 */
export async function openBackend(
  config: StoreConfig,
  prefix: string,
  options: BackendOptions = {},
): Promise<Backend> {
  const timeoutMs = options.timeoutMs ?? 2_000;
  const warn = options.warn ?? ((message: string) => console.warn(`llm-api: warning: ${message}`));
  if (config.kind === 'memory') {
    const store = createMemoryStore({
      ...(config.maxEntries === undefined ? {} : { maxEntries: config.maxEntries }),
      ...(config.maxOutcomeBytes === undefined ? {} : { maxOutcomeBytes: config.maxOutcomeBytes }),
      ...(config.maxBytes === undefined ? {} : { maxBytes: config.maxBytes }),
    });
    return {
      kind: 'memory',
      store,
      // Bounded like the store: the memory configuration's memory has a bound.
      ledger: createMemoryLedger(
        config.maxEntries === undefined ? {} : { maxEntries: config.maxEntries },
      ),
      ping: async () => undefined,
      close: () => store.close(),
    };
  }
  if (config.kind === 'postgres') {
    try {
      return await openPostgresBackend(config.url, prefix, timeoutMs);
    } catch (error) {
      throw new BackendError(
        `PostgreSQL at ${redact(config.url)} is not usable: ${messageOf(error)}`,
        {
          cause: error,
        },
      );
    }
  }
  if (config.kind === 'redis') {
    let client: Awaited<ReturnType<typeof connectRedis>>;
    try {
      client = await connectRedis(config.url, timeoutMs);
    } catch (error) {
      throw new BackendError(
        `Redis at ${redact(config.url)} does not answer: ${messageOf(error)}`,
        {
          cause: error,
        },
      );
    }
    const warning = durabilityWarning(redact(config.url), await redisDurability(client));
    if (warning) warn(warning);
    // XREAD BLOCK holds its connection: live-stream readers wait on one of their own.
    let blockingClient: typeof client;
    try {
      blockingClient = await connectRedis(config.url, timeoutMs);
    } catch (error) {
      client.disconnect();
      throw new BackendError(
        `Redis at ${redact(config.url)} does not answer: ${messageOf(error)}`,
        {
          cause: error,
        },
      );
    }
    const store = createRedisStore({ client, keyPrefix: `${prefix}idem:` });
    return {
      kind: 'redis',
      liveStreams: createRedisLiveStreams({
        client,
        blockingClient,
        store,
        keyPrefix: `${prefix}live:`,
        blockMs: Math.max(1, Math.min(1_000, Math.floor(timeoutMs / 2))),
        commandTimeoutMs: timeoutMs,
      }),
      store,
      ledger: boundLedger(createRedisLedger(client, prefix), timeoutMs),
      ping: async () => {
        await callWithin('ping', timeoutMs, () => client.ping());
      },
      close: async () => {
        // QUIT is bounded by commandTimeout; a client that cannot send it is dropped.
        await Promise.all([client, blockingClient].map((c) => c.quit().catch(() => undefined)));
        client.disconnect();
        blockingClient.disconnect();
      },
    };
  }
  const client = createDynamoDbClient(config, timeoutMs);
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
      `DynamoDB table ${config.table}${config.endpoint ? ` at ${config.endpoint}` : ''} is not usable: ${messageOf(error)}`,
      { cause: error },
    );
  }
  const healthKey = { pk: { S: `${prefix}health` } };
  // DynamoDB is called over HTTP, one connection per call in flight: a table that slows
  // down (a throttled table, a cold or loaded DynamoDB Local after a restart) would get every
  // request's calls at once and queue them past the store timeout, so that nothing finishes
  // in time and retries keep the queue full. The admission limit (shared by the store, the
  // ledger and the readiness read of this client) refuses new requests beyond what the table
  // answers within half the timeout; requests already admitted run to their end.
  const admission = createAdmission({ targetLatencyMs: Math.max(50, timeoutMs / 2) });
  const ledger = createDynamoDbLedger(client, config.table, prefix, timeoutMs);
  // Readiness checks in flight share one read: the read is essential (never refused), so
  // without this every probe, from anyone who can reach /readyz, would put one more call in
  // flight on the table, past the limit that protects it.
  let pinging: Promise<void> | undefined;
  const pingTable = async () => {
    // Essential: readiness says whether the table answers, not whether this instance is
    // busy. Refused under load, it would make a load balancer take every busy instance out
    // in turn, and send the whole load to the rest.
    await callWithin('ping', timeoutMs, (abortSignal) =>
      admission.run('essential', () =>
        client.send(new GetItemCommand({ TableName: config.table, Key: healthKey }), {
          abortSignal,
        }),
      ),
    );
  };
  return {
    kind: 'dynamodb',
    store: admitStore(store, admission),
    ledger: boundLedger(admitLedger(ledger, admission), timeoutMs),
    ping: () => {
      pinging ??= pingTable().finally(() => {
        pinging = undefined;
      });
      return pinging;
    },
    close: async () => {
      client.destroy();
    },
  };
}
