import { DynamoDBClient } from '@aws-sdk/client-dynamodb';

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
 * for ever). Here a connection attempt and each HTTP request are bounded by `timeoutMs`;
 * callers also pass an `abortSignal` so that the SDK's own retries stay inside the limit.
 */
export function createDynamoDbClient(target: DynamoDbTarget, timeoutMs: number): DynamoDBClient {
  return new DynamoDBClient({
    region: target.region,
    requestHandler: { connectionTimeout: timeoutMs, requestTimeout: timeoutMs },
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
