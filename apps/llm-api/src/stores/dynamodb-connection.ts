import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { recommendedDynamoDbClientConfig } from '@idem/store-dynamodb';

/** Where the DynamoDB client goes. */
export interface DynamoDbTarget {
  region: string;
  /** e.g. `http://127.0.0.1:8000` for DynamoDB Local; the AWS endpoint when undefined. */
  endpoint: string | undefined;
}

/**
 * The DynamoDB client of the app. The SDK opens a connection per request (kept alive in a
 * pool) and has no "closed for good" state, so it recovers by itself once DynamoDB answers
 * again; what it lacks by default is any time limit (a silent connection hangs a request
 * for ever, and `requestTimeout` alone only logs a warning). Here the store package's
 * recommended settings bound a connection attempt and the one HTTP attempt of each call by
 * `timeoutMs`, with `throwOnRequestTimeout`, so a call abandoned at the limit also ends in
 * the SDK and frees its connection. One attempt: core retries what must be retried (renewals,
 * the completion), and a refused acquire is the client's to retry.
 */
export function createDynamoDbClient(target: DynamoDbTarget, timeoutMs: number): DynamoDBClient {
  return new DynamoDBClient({
    region: target.region,
    ...recommendedDynamoDbClientConfig({
      requestTimeoutMs: timeoutMs,
      connectionTimeoutMs: timeoutMs,
      maxAttempts: 1,
    }),
    ...(target.endpoint
      ? {
          endpoint: target.endpoint,
          // DynamoDB Local accepts any credentials; use the environment's when present.
          ...(process.env.AWS_ACCESS_KEY_ID
            ? {}
            : { credentials: { accessKeyId: 'local', secretAccessKey: 'local' } }),
        }
      : {}),
  });
}
