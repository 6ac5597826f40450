import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { recommendedDynamoDbClientConfig } from '@idem/store-dynamodb';

/** Where the DynamoDB client goes. */
export interface DynamoDbTarget {
  region: string;
  /** e.g. `http://127.0.0.1:8000` for DynamoDB Local; the AWS endpoint when undefined. */
  endpoint: string | undefined;
}

/** How one SDK call is split into attempts. */
export interface DynamoDbCallBudget {
  /** Limit of one attempt, connecting and waiting for a socket of the pool included. */
  requestTimeoutMs: number;
  connectionTimeoutMs: number;
  /** Attempts per call, the first included. */
  maxAttempts: number;
}

/**
 * Room left for the SDK's pause before its retry. For a timeout or a reset (a transient
 * error) the standard strategy waits a random time below its delay base: 50 ms in current
 * releases, 100 ms in older ones; 200 ms leaves room for either.
 */
export const SDK_RETRY_PAUSE_MS = 200;

/** Shortest attempt worth two: below this a store timeout gets one attempt. */
const MIN_ATTEMPT_MS = 200;

/** Kept free of attempts for the SDK's own work around them (signing, parsing). */
const MARGIN_MS = 10;

/**
 * Splits the app's store timeout into SDK attempts so that a whole call, retries and the
 * pause between them included, MUST end before `storeTimeoutMs`: two attempts of
 * `(storeTimeoutMs − 210) / 2` each (one attempt of `storeTimeoutMs − 10` when that would
 * leave less than 200 ms an attempt). The second attempt is what serves a call whose first
 * one went to a connection that died silently: it is cut, and the retry opens a new one.
 */
export function dynamoDbCallBudget(storeTimeoutMs: number): DynamoDbCallBudget {
  const split = Math.floor((storeTimeoutMs - SDK_RETRY_PAUSE_MS - MARGIN_MS) / 2);
  if (split >= MIN_ATTEMPT_MS) {
    return { requestTimeoutMs: split, connectionTimeoutMs: split, maxAttempts: 2 };
  }
  const single = Math.max(1, storeTimeoutMs - MARGIN_MS);
  return { requestTimeoutMs: single, connectionTimeoutMs: single, maxAttempts: 1 };
}

/**
 * The DynamoDB client of the app, built with `@idem/store-dynamodb`'s
 * `recommendedDynamoDbClientConfig` sized by {@link dynamoDbCallBudget}. It MUST cut every
 * attempt that gets no answer (`throwOnRequestTimeout`, `socketTimeout`) by itself: the
 * idempotency store's calls carry no abort signal, so when core gives up on one at
 * `storeTimeoutMs`, only the client frees its socket. Without that, a store that stops
 * answering (a silent network, a restarted emulator still slow, sockets to a killed process
 * that never got a reset) leaves the SDK's 50 pooled sockets busy with requests nobody waits
 * for, every new call queues behind them and service does not come back.
 *
 * The SDK keeps no "closed" state, so once DynamoDB answers the next call succeeds.
 */
export function createDynamoDbClient(
  target: DynamoDbTarget,
  storeTimeoutMs: number,
): DynamoDBClient {
  return new DynamoDBClient({
    region: target.region,
    ...recommendedDynamoDbClientConfig(dynamoDbCallBudget(storeTimeoutMs)),
    ...endpointOptions(target),
  });
}

/**
 * A client for the start-up work only (`ensureTable`: CreateTable, DescribeTable, TTL), whose
 * calls may take seconds on a cold endpoint: each attempt bounded by `setupTimeoutMs`, three
 * attempts. Destroy it once the table is ready.
 */
export function createDynamoDbSetupClient(
  target: DynamoDbTarget,
  setupTimeoutMs: number,
): DynamoDBClient {
  return new DynamoDBClient({
    region: target.region,
    ...recommendedDynamoDbClientConfig({
      requestTimeoutMs: setupTimeoutMs,
      connectionTimeoutMs: setupTimeoutMs,
      maxAttempts: 3,
    }),
    ...endpointOptions(target),
  });
}

function endpointOptions(target: DynamoDbTarget) {
  if (!target.endpoint) return {};
  return {
    endpoint: target.endpoint,
    // DynamoDB Local accepts any credentials; use the environment's when present.
    ...(process.env.AWS_ACCESS_KEY_ID
      ? {}
      : { credentials: { accessKeyId: 'local', secretAccessKey: 'local' } }),
  };
}
