import type { JsonValue } from '@idem/core';
import {
  DEFAULT_TIMEOUT_MARGIN_MS,
  type EngineOptions,
  engineForInvocation,
  type LambdaContextLike,
  remainingMs,
  requestFor,
  type ScopeOption,
} from './lambda-engine.js';
import type { IdempotencyInfo } from './make-idempotent.js';

/** One entry of the partial-batch response: the record Lambda must deliver again. */
export interface BatchItemFailure {
  itemIdentifier: string;
}

/** The response of a batch handler (`ReportBatchItemFailures` must be on in the event source mapping). */
export interface BatchResponse {
  batchItemFailures: BatchItemFailure[];
}

/**
 * What happened to one record:
 * - `processed`: the handler ran and its outcome was recorded;
 * - `replayed`: a recorded outcome exists (a redelivery): the handler did not run;
 * - `failed`: the handler threw, a duplicate is still in progress, or the store failed;
 * - `timed_out`: the invocation's deadline came while the record ran (it goes on, fenced);
 * - `not_attempted`: skipped after an earlier failure of an ordered source, or past the deadline.
 */
export type RecordStatus = 'processed' | 'replayed' | 'failed' | 'timed_out' | 'not_attempted';

/** A record's fate, for `onRecord`. */
export interface RecordReport<TRecord> {
  record: TRecord;
  itemIdentifier: string;
  status: RecordStatus;
  /** What failed, for `failed`. */
  error?: unknown;
}

/** The handler of one record; its return value is the recorded outcome. */
export type RecordHandler<TRecord, TContext> = (
  record: TRecord,
  context: TContext,
  idempotency: IdempotencyInfo,
) => Promise<unknown>;

/** Options of the batch handlers. */
export interface BatchOptions<TRecord, TContext extends LambdaContextLike>
  extends EngineOptions<unknown> {
  /**
   * The key of a record (a key string, or any JSON value, hashed). MUST be the same on every
   * delivery of the record. @default the source's id: SQS `messageId`, Kinesis and DynamoDB
   * Streams `eventID` (shard and sequence number)
   */
  key?: (record: TRecord, context: TContext) => JsonValue;
  /**
   * The part of a record fingerprinted (another payload under the same key fails the record
   * with `MismatchError`), or `false` for none. @default the body / data / stream images,
   * which never change between deliveries
   */
  payload?: ((record: TRecord, context: TContext) => JsonValue) | false;
  /** What keys are unique within. @default ['lambda', context.functionName] */
  scope?: ScopeOption<TRecord, TContext>;
  /**
   * Time kept in hand before Lambda's deadline: a record still running then is reported as
   * failed (with every record not yet attempted) and the response returned, so that Lambda
   * does not time out and redeliver the whole batch. @default 1_000
   */
  timeoutMarginMs?: number;
  /** Told what happened to each record (logging, metrics). Errors it throws are ignored. */
  onRecord?: (report: RecordReport<TRecord>) => void;
}

/** How a batch source names, keys and orders its records. */
export interface BatchSource<TRecord> {
  /** The `itemIdentifier` Lambda expects for a failed record. */
  itemIdentifier(record: TRecord): string;
  defaultKey(record: TRecord): JsonValue;
  defaultPayload(record: TRecord): JsonValue;
  /** Ordered sources stop at the first failure and report it and every later record. */
  ordered(records: readonly TRecord[]): boolean;
}

const TIMED_OUT = Symbol('timed out');

/** Builds a batch handler for a source; see `makeSqsBatchHandler` and its siblings. */
export function makeBatchHandler<TRecord, TContext extends LambdaContextLike>(
  source: BatchSource<TRecord>,
  handler: RecordHandler<TRecord, TContext>,
  options: BatchOptions<TRecord, TContext>,
): (event: { Records?: TRecord[] }, context: TContext) => Promise<BatchResponse> {
  const { key, payload, scope, timeoutMarginMs, onRecord, ...engineOptions } = options;
  const margin = timeoutMarginMs ?? DEFAULT_TIMEOUT_MARGIN_MS;
  engineForInvocation(engineOptions, { functionName: '', getRemainingTimeInMillis: () => 1e9 });
  const report = (r: RecordReport<TRecord>) => {
    try {
      onRecord?.(r);
    } catch {
      // A broken listener must not fail the batch.
    }
  };

  return async (event, context) => {
    const records = event?.Records ?? [];
    const failures: BatchItemFailure[] = [];
    if (records.length === 0) return { batchItemFailures: failures };
    const deadline = performance.now() + remainingMs(context) - margin;
    const engine = engineForInvocation(engineOptions, context);
    const ordered = source.ordered(records);
    let stop = false;
    for (const record of records) {
      const itemIdentifier = source.itemIdentifier(record);
      const fail = (status: RecordStatus, error?: unknown) => {
        failures.push({ itemIdentifier });
        report({ record, itemIdentifier, status, error });
      };
      if (stop || performance.now() >= deadline) {
        fail('not_attempted');
        continue;
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        const request = requestFor(
          record,
          context,
          (key ?? source.defaultKey)(record, context),
          payload === false ? undefined : (payload ?? source.defaultPayload)(record, context),
          scope,
        );
        const run = engine.execute(request, (ctx) => handler(record, context, ctx));
        const deadlinePassed = new Promise<typeof TIMED_OUT>((resolve) => {
          timer = setTimeout(() => resolve(TIMED_OUT), Math.max(0, deadline - performance.now()));
        });
        const result = await Promise.race([run, deadlinePassed]);
        if (result === TIMED_OUT) {
          // The record goes on in the background under its lease (capped at the deadline);
          // its outcome, if it lands, is replayed to the redelivery.
          run.catch(() => {});
          fail('timed_out');
          stop = true;
          continue;
        }
        report({ record, itemIdentifier, status: result.replayed ? 'replayed' : 'processed' });
      } catch (error) {
        fail('failed', error);
        if (ordered) stop = true;
      } finally {
        clearTimeout(timer);
      }
    }
    return { batchItemFailures: failures };
  };
}
