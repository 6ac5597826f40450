import {
  CreateTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  type DynamoDBClient,
  type TableDescription,
  UpdateTimeToLiveCommand,
} from '@aws-sdk/client-dynamodb';
import { checkDuration, InvalidInputError, toStoreError } from '@idem/core';
import type { ItemSchema } from './record-item.js';
import { DYNAMODB_ERRORS, isNamed } from './sdk-errors.js';

/** Options of `ensureTable()`. */
export interface EnsureTableOptions {
  /**
   * How long ensureTable() keeps trying, in ms from its call: waiting for a new table to
   * become ACTIVE, and sending again a request that failed for a transient reason (no answer
   * within `requestDeadlineMs`, a dropped or refused connection, throttling, a 5xx). A
   * request DynamoDB refused for good (validation, access, credentials) fails at once. Each
   * request is bounded by the store's `requestDeadlineMs`, so the call settles within
   * `timeoutMs + requestDeadlineMs`. A non-negative number; 0 sends each request once.
   * @default 120_000
   */
  timeoutMs?: number;
  /** Interval between polls and between tries, in ms: 1 to 2_147_483_647. @default 500 */
  pollMs?: number;
}

/** What `ensureTable()` did. */
export interface EnsureTableResult {
  /**
   * True when the table did not exist and this call created it (or may have: a CreateTable
   * of it got no answer, and the next found the table).
   */
  created: boolean;
  /**
   * True when TTL was off and this call turned it on for the `ttl` attribute (or may have: an
   * UpdateTimeToLive of it got no answer, and TTL was on when it looked again).
   */
  ttlEnabled: boolean;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function keySchemaOf(
  schema: ItemSchema,
): Array<{ AttributeName: string; KeyType: 'HASH' | 'RANGE' }> {
  const { partitionKey, single } = schema.layout;
  return single
    ? [
        { AttributeName: partitionKey, KeyType: 'HASH' },
        { AttributeName: single.sortKey, KeyType: 'RANGE' },
      ]
    : [{ AttributeName: partitionKey, KeyType: 'HASH' }];
}

function checkKeySchema(tableName: string, table: TableDescription, schema: ItemSchema): void {
  const expected = keySchemaOf(schema);
  const actual = table.KeySchema ?? [];
  const types = new Map(
    (table.AttributeDefinitions ?? []).map((d) => [d.AttributeName, d.AttributeType]),
  );
  const same =
    actual.length === expected.length &&
    expected.every(
      (e) =>
        actual.some((a) => a.AttributeName === e.AttributeName && a.KeyType === e.KeyType) &&
        types.get(e.AttributeName) === 'S',
    );
  if (!same) {
    const want = expected.map((e) => `${e.AttributeName} (${e.KeyType}, S)`).join(' + ');
    const have = actual
      .map((a) => `${a.AttributeName} (${a.KeyType}, ${types.get(a.AttributeName ?? '')})`)
      .join(' + ');
    throw new InvalidInputError(`Table ${tableName} has key ${have}; this store needs ${want}`);
  }
}

/** Longest timer Node keeps (a longer sleep would fire at once: a tight polling loop). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Options of one request: aborted past the store's `requestDeadlineMs`, as every other. */
const bounded = (deadlineMs: number) => ({ abortSignal: AbortSignal.timeout(deadlineMs) });

/** Exception names that say "try again later" whatever their HTTP status. */
const THROTTLED = new Set([
  'ThrottlingException',
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
  'LimitExceededException',
  'TooManyRequestsException',
  'RequestTimeout',
  'RequestTimeoutException',
]);
/** Node's codes of a connection that failed or went away, and of a name that did not resolve. */
const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/**
 * True when a request of ensureTable() may succeed if sent again: no answer in time, a
 * connection that failed, throttling, a server-side fault. False for an answer that refuses
 * the request itself (validation, access, credentials: DynamoDB's client faults) and for
 * anything that is not a request failure.
 */
export function isTransientTableError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const e = error as {
    name?: unknown;
    code?: unknown;
    $fault?: unknown;
    $retryable?: unknown;
    $metadata?: { httpStatusCode?: unknown };
  };
  if (typeof e.name === 'string' && THROTTLED.has(e.name)) return true;
  if (e.$retryable) return true;
  const status = e.$metadata?.httpStatusCode;
  if (typeof status === 'number' && status >= 500) return true;
  if (e.$fault === 'server') return true;
  if (e.$fault === 'client') return false;
  // No answer: the store's deadline (AbortSignal.timeout), the client's own timeouts, or a
  // socket that failed.
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return true;
  return typeof e.code === 'string' && NETWORK_CODES.has(e.code);
}

/** Codes of a connection that was never made: the request was not sent. */
const UNSENT_CODES = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

/**
 * True when a transient failure may have come after DynamoDB applied the request: no
 * answer, a connection lost on the way, a 5xx. Not for throttling (DynamoDB refused it) nor
 * a connection never made.
 */
function mayHaveApplied(error: unknown): boolean {
  if (!isTransientTableError(error)) return false;
  const e = error as { name?: unknown; code?: unknown };
  if (typeof e.name === 'string' && THROTTLED.has(e.name)) return false;
  return !(typeof e.code === 'string' && UNSENT_CODES.has(e.code));
}

/**
 * Runs ensureTable()'s requests: each bounded by the store's deadline, a transient failure
 * sent again every `pollMs` until `deadline` (a monotonic time), the last failure typed.
 */
class TableCalls {
  constructor(
    private readonly client: DynamoDBClient,
    private readonly requestDeadlineMs: number,
    private readonly pollMs: number,
    private readonly deadline: number,
  ) {}

  /** Time left before the deadline, ms (0 once past it). */
  left(): number {
    return Math.max(0, this.deadline - performance.now());
  }

  /** Waits `pollMs`, or what is left if less; false when no time is left. */
  async pause(): Promise<boolean> {
    const left = this.left();
    if (left <= 0) return false;
    await sleep(Math.min(this.pollMs, left));
    return true;
  }

  /**
   * Sends `command` (its output typed `T`); `onError` may answer a failure itself (a value,
   * or undefined to go on).
   */
  async send<T>(
    operation: string,
    command: () => object,
    onError?: (error: unknown) => { value: T } | undefined,
  ): Promise<T> {
    for (;;) {
      try {
        return (await this.client.send(command() as never, bounded(this.requestDeadlineMs))) as T;
      } catch (error) {
        const answered = onError?.(error);
        if (answered) return answered.value;
        if (!isTransientTableError(error) || !(await this.pause()))
          throw toStoreError(DYNAMODB_ERRORS, operation, error);
      }
    }
  }

  /** The table's description, undefined when it does not exist. */
  describe(tableName: string): Promise<TableDescription | undefined> {
    return this.send<{ Table?: TableDescription } | undefined>(
      'DescribeTable',
      () => new DescribeTableCommand({ TableName: tableName }),
      (error) => (isNamed(error, 'ResourceNotFoundException') ? { value: undefined } : undefined),
    ).then((answer) => answer?.Table);
  }
}

/**
 * Creates the table if it is missing (on-demand billing, the store's key schema), waits
 * until it is ACTIVE, checks the key schema of an existing table, and enables TTL on the
 * `ttl` attribute (epoch seconds). TTL only removes expired items eventually; expiry itself
 * is decided by the store's conditions. A request that fails for a transient reason is sent
 * again until `timeoutMs` has passed.
 */
export async function ensureTable(
  client: DynamoDBClient,
  tableName: string,
  schema: ItemSchema,
  options: EnsureTableOptions = {},
  requestDeadlineMs = 5_000,
): Promise<EnsureTableResult> {
  // Checked before any request: NaN would poll for ever, 0 or a huge value in a tight loop.
  const timeoutMs = checkDuration('timeoutMs', options.timeoutMs ?? 120_000);
  const pollMs = checkDuration('pollMs', options.pollMs ?? 500, MAX_TIMER_MS);
  if (pollMs < 1) throw new InvalidInputError('pollMs must be at least 1 ms');
  const calls = new TableCalls(client, requestDeadlineMs, pollMs, performance.now() + timeoutMs);
  let table = await calls.describe(tableName);
  let created = false;
  if (!table) {
    const keySchema = keySchemaOf(schema);
    // A CreateTable that got no answer may have created the table: the next one then finds
    // it in use, and this call counts as its creator.
    let unanswered = false;
    const answer = await calls.send<unknown>(
      'CreateTable',
      () =>
        new CreateTableCommand({
          TableName: tableName,
          BillingMode: 'PAY_PER_REQUEST',
          KeySchema: keySchema,
          AttributeDefinitions: keySchema.map((k) => ({
            AttributeName: k.AttributeName,
            AttributeType: 'S',
          })),
        }),
      // Another process created it first: fine, wait for it like for our own.
      (error) => {
        if (isNamed(error, 'ResourceInUseException')) return { value: unanswered };
        if (mayHaveApplied(error)) unanswered = true;
        return undefined;
      },
    );
    // Its output, or true after an unanswered one: created; false: found in use.
    created = answer !== false;
  }
  for (;;) {
    table = await calls.describe(tableName);
    if (table?.TableStatus === 'ACTIVE') break;
    if (!(await calls.pause())) {
      throw toStoreError(
        DYNAMODB_ERRORS,
        'ensureTable',
        new Error(`Table ${tableName} is not ACTIVE after ${timeoutMs} ms`),
      );
    }
  }
  checkKeySchema(tableName, table, schema);

  const ttlName = schema.names.ttl;
  // An UpdateTimeToLive that got no answer may have applied: TTL is looked at again before
  // the next, and found on, counts as this call's.
  let unanswered = false;
  for (;;) {
    const ttl = (
      await calls.send<{
        TimeToLiveDescription?: { TimeToLiveStatus?: string; AttributeName?: string };
      }>('DescribeTimeToLive', () => new DescribeTimeToLiveCommand({ TableName: tableName }))
    ).TimeToLiveDescription;
    const status = ttl?.TimeToLiveStatus ?? 'DISABLED';
    if (status === 'ENABLED' || status === 'ENABLING') {
      if (ttl?.AttributeName !== ttlName) {
        throw new InvalidInputError(
          `Table ${tableName} has TTL on attribute ${ttl?.AttributeName}; set the store's attributes.ttl to it, or move the table's TTL to ${ttlName}`,
        );
      }
      return { created, ttlEnabled: unanswered };
    }
    if (status === 'DISABLING') {
      throw new InvalidInputError(
        `Table ${tableName} is disabling TTL; run ensureTable() again once that has finished`,
      );
    }
    try {
      await client.send(
        new UpdateTimeToLiveCommand({
          TableName: tableName,
          TimeToLiveSpecification: { AttributeName: ttlName, Enabled: true },
        }),
        bounded(requestDeadlineMs),
      );
      return { created, ttlEnabled: true };
    } catch (error) {
      if (!isTransientTableError(error) || !(await calls.pause()))
        throw toStoreError(DYNAMODB_ERRORS, 'UpdateTimeToLive', error);
      if (mayHaveApplied(error)) unanswered = true;
    }
  }
}
