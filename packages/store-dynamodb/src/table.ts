import {
  CreateTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  type DynamoDBClient,
  type TableDescription,
  UpdateTimeToLiveCommand,
} from '@aws-sdk/client-dynamodb';
import { checkDuration, InvalidInputError, settleWithin, toStoreError } from '@idem/core';
import type { ItemSchema } from './record-item.js';
import { DYNAMODB_ERRORS, isNamed } from './sdk-errors.js';
import { isTransientTableError, mayHaveApplied, noAnswer } from './table-errors.js';

/** Options of `ensureTable()`. */
export interface EnsureTableOptions {
  /**
   * How long ensureTable() keeps trying, in ms from its call: waiting for a new table to
   * become ACTIVE, and sending again a request that failed for a transient reason (no answer
   * within `requestDeadlineMs`, a dropped or refused connection, throttling, a 5xx). A
   * request DynamoDB refused for good (validation, access, credentials) fails at once. Each
   * request is bounded by the store's `requestDeadlineMs`, and none runs past
   * `timeoutMs + requestDeadlineMs` from the call, so the call settles within that (slow
   * answers included). A non-negative number; 0 sends each request once.
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

/**
 * Runs ensureTable()'s requests: each bounded by the store's deadline, a transient failure
 * sent again every `pollMs` until `deadline` (a monotonic time), the last failure typed.
 * No request runs past `deadline + requestDeadlineMs`, however many steps are left: the
 * call settles by then even when each answer comes just within the request deadline.
 */
class TableCalls {
  private readonly end: number;

  constructor(
    private readonly client: DynamoDBClient,
    private readonly requestDeadlineMs: number,
    private readonly pollMs: number,
    private readonly deadline: number,
  ) {
    this.end = deadline + requestDeadlineMs;
  }

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
   * Sends `command` once, within the store's request deadline and the call's end. The
   * abort signal ends the HTTP exchange and the client's own retries, but not the wait for
   * credentials (a provider that never answers would hold the call for ever): the timer of
   * `settleWithin` ends that.
   */
  async once<T>(command: object): Promise<T> {
    const ms = Math.min(this.requestDeadlineMs, Math.ceil(this.end - performance.now()));
    if (ms <= 0) throw noAnswer(0);
    const sent = this.client.send(command as never, { abortSignal: AbortSignal.timeout(ms) });
    return (await settleWithin(sent as Promise<unknown>, ms, {
      onTimeout: () => noAnswer(ms),
    })) as T;
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
        return await this.once<T>(command());
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
  const keySchema = keySchemaOf(schema);
  const create = () =>
    new CreateTableCommand({
      TableName: tableName,
      BillingMode: 'PAY_PER_REQUEST',
      KeySchema: keySchema,
      AttributeDefinitions: keySchema.map((k) => ({
        AttributeName: k.AttributeName,
        AttributeType: 'S',
      })),
    });
  let created = false;
  // A CreateTable that got no answer may have created the table: the next one then finds
  // it in use, and this call counts as its creator.
  let unanswered = false;
  let table = await calls.describe(tableName);
  for (;;) {
    if (!table) {
      // Missing, or gone while this call waited (it was being deleted): created again.
      const answer = await calls.send<unknown>('CreateTable', create, (error) => {
        // Another process created it first (or it is still being deleted): wait for it.
        if (isNamed(error, 'ResourceInUseException')) return { value: false };
        if (mayHaveApplied(error)) unanswered = true;
        return undefined;
      });
      // Its output: created; false: found in use, ours if an earlier try got no answer.
      if (answer !== false || unanswered) created = true;
      table = await calls.describe(tableName);
    }
    if (table?.TableStatus === 'ACTIVE') break;
    if (!(await calls.pause())) {
      throw toStoreError(
        DYNAMODB_ERRORS,
        'ensureTable',
        new Error(
          `Table ${tableName} is not ACTIVE after ${timeoutMs} ms (${table?.TableStatus ?? 'not found'})`,
        ),
      );
    }
    table = await calls.describe(tableName);
  }
  checkKeySchema(tableName, table, schema);

  const ttlName = schema.names.ttl;
  // An UpdateTimeToLive that got no answer may have applied: TTL is looked at again before
  // the next, and found on, counts as this call's.
  let ttlUnanswered = false;
  // An UpdateTimeToLive refused as invalid: DynamoDB's answer when another process turned
  // TTL on since this call looked ("TimeToLive is already enabled"). TTL is looked at again,
  // once; still off, the refusal is thrown.
  let refused: unknown;
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
      return { created, ttlEnabled: ttlUnanswered };
    }
    if (status === 'DISABLING') {
      throw new InvalidInputError(
        `Table ${tableName} is disabling TTL; run ensureTable() again once that has finished`,
      );
    }
    if (refused) throw toStoreError(DYNAMODB_ERRORS, 'UpdateTimeToLive', refused);
    try {
      await calls.once(
        new UpdateTimeToLiveCommand({
          TableName: tableName,
          TimeToLiveSpecification: { AttributeName: ttlName, Enabled: true },
        }),
      );
      return { created, ttlEnabled: true };
    } catch (error) {
      if (isNamed(error, 'ValidationException')) {
        refused = error;
        continue;
      }
      if (!isTransientTableError(error) || !(await calls.pause()))
        throw toStoreError(DYNAMODB_ERRORS, 'UpdateTimeToLive', error);
      if (mayHaveApplied(error)) ttlUnanswered = true;
    }
  }
}
