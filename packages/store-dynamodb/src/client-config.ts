import type { DynamoDBClientConfig } from '@aws-sdk/client-dynamodb';
import { InvalidInputError } from '@idem/core';

/** Longest timer Node keeps (longer ones fire after 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Options of {@link recommendedDynamoDbClientConfig}. */
export interface RecommendedDynamoDbClientInput {
  /**
   * Longest an attempt may wait for its answer, in ms (the request handler's `requestTimeout`
   * with `throwOnRequestTimeout`, and `socketTimeout`): 1 to 2_147_483_647.
   * @default 2_000
   */
  requestTimeoutMs?: number;
  /** Longest a new connection may take to open, in ms: 1 to 2_147_483_647. @default 1_000 */
  connectionTimeoutMs?: number;
  /**
   * Attempts per call, the first included (the SDK's `maxAttempts`). Keep
   * `maxAttempts × requestTimeoutMs` below core's `storeTimeoutMs` (5 s).
   * @default 2
   */
  maxAttempts?: number;
}

/** The part of a `DynamoDBClientConfig` that bounds calls. */
export type BoundedDynamoDbClientConfig = Pick<
  DynamoDBClientConfig,
  'maxAttempts' | 'requestHandler'
>;

/**
 * SDK client settings for a `DynamoDBClient` used by an idem store:
 * `new DynamoDBClient({ region, ...recommendedDynamoDbClientConfig() })`.
 *
 * With them, a store call MUST settle within about `maxAttempts × requestTimeoutMs` plus the
 * SDK's short retry backoff (about 4.2 s with the defaults), also when a connection goes
 * silent: an attempt that gets no answer is cut at `requestTimeoutMs` (by default the SDK
 * only logs a warning) and the next one opens a fresh connection. The SDK keeps no
 * connection state it could give up on, so once DynamoDB answers again the next call
 * succeeds. `requestHandler` is given as the handler's constructor options, which SDK
 * releases from early 2024 (3.5xx) accept; with an older SDK pass
 * `new NodeHttpHandler(config.requestHandler)` from `@smithy/node-http-handler`.
 */
export function recommendedDynamoDbClientConfig(
  input: RecommendedDynamoDbClientInput = {},
): BoundedDynamoDbClientConfig {
  const requestTimeout = input.requestTimeoutMs ?? 2_000;
  const connectionTimeout = input.connectionTimeoutMs ?? 1_000;
  const maxAttempts = input.maxAttempts ?? 2;
  for (const [name, value] of [
    ['requestTimeoutMs', requestTimeout],
    ['connectionTimeoutMs', connectionTimeout],
    ['maxAttempts', maxAttempts],
  ] as const) {
    if (!(Number.isSafeInteger(value) && value > 0))
      throw new InvalidInputError(`${name} must be a positive integer`);
  }
  // The request handler arms Node timers with these: past the longest one Node keeps, a timer
  // fires after 1 ms, and every request would fail at once.
  for (const [name, value] of [
    ['requestTimeoutMs', requestTimeout],
    ['connectionTimeoutMs', connectionTimeout],
  ] as const) {
    if (value > MAX_TIMER_MS)
      throw new InvalidInputError(
        `${name} must be at most ${MAX_TIMER_MS} (the longest timer Node keeps); got ${value}`,
      );
  }
  return {
    maxAttempts,
    requestHandler: {
      connectionTimeout,
      requestTimeout,
      throwOnRequestTimeout: true,
      socketTimeout: requestTimeout,
    },
  };
}
