import { DynamoDBClient } from '@aws-sdk/client-dynamodb';

/** Where the DynamoDB client goes. */
export interface DynamoDbTarget {
  region: string;
  /** e.g. `http://127.0.0.1:8000` for DynamoDB Local; the AWS endpoint when undefined. */
  endpoint: string | undefined;
}

/** Calls in flight on one client at most; past it, calls fail at once (503). */
export const DYNAMODB_MAX_IN_FLIGHT = 32;

/** A call refused because {@link DYNAMODB_MAX_IN_FLIGHT} calls are already waiting. */
export class DynamoDbBusyError extends Error {
  override readonly name = 'DynamoDbBusyError';
}

type Send = (command: unknown, options?: { abortSignal?: AbortSignal }) => Promise<unknown>;

/**
 * The DynamoDB client of the app. The SDK opens a connection per request (kept alive in a
 * pool of 50) and has no "closed for good" state, so it recovers by itself once DynamoDB
 * answers again. What it lacks by default is any bound, and the app adds two:
 * - time: every call (the SDK's own retries included) is aborted at `timeoutMs`, which
 *   destroys its socket. The idempotency store's calls carry no signal of their own, and
 *   core gives up on them at the same limit: without the abort the SDK would go on with
 *   requests nobody waits for, holding the pool's sockets.
 * - count: at most `maxInFlight` calls wait at once; past that a call fails at once with
 *   {@link DynamoDbBusyError} (503 + Retry-After) instead of queueing for a socket. A
 *   DynamoDB that has just restarted (a cold emulator answers in seconds) is then not buried
 *   under every request that arrived meanwhile, and service comes back as soon as it answers.
 * Attempts are not cut shorter than the whole limit: a slow but live store still answers.
 */
export function createDynamoDbClient(
  target: DynamoDbTarget,
  timeoutMs: number,
  maxInFlight: number = DYNAMODB_MAX_IN_FLIGHT,
): DynamoDBClient {
  const client = createUnboundedDynamoDbClient(target, timeoutMs);
  const send = client.send.bind(client) as Send;
  let inFlight = 0;
  const bounded: Send = (command, options = {}) => {
    if (inFlight >= maxInFlight) {
      return Promise.reject(
        new DynamoDbBusyError(`${maxInFlight} DynamoDB calls are already in flight`),
      );
    }
    inFlight += 1;
    const limit = AbortSignal.timeout(timeoutMs);
    const abortSignal = options.abortSignal ? AbortSignal.any([limit, options.abortSignal]) : limit;
    return send(command, { ...options, abortSignal }).finally(() => {
      inFlight -= 1;
    });
  };
  Object.assign(client, { send: bounded });
  return client;
}

/**
 * A client whose attempts are each bounded by `timeoutMs` but whose calls are not: for the
 * start-up work (`ensureTable`), whose calls may take seconds on a cold endpoint. Destroy
 * it once the table is ready.
 */
export function createUnboundedDynamoDbClient(
  target: DynamoDbTarget,
  timeoutMs: number,
): DynamoDBClient {
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
