import {
  InvalidInputError,
  isIdemError,
  isThenable,
  type JsonValue,
  MAX_TIMER_MS,
  markerFailureOf,
  type OutcomePolicy,
  outcomePolicyAnswer,
  ReplayedFailureError,
  successOnly,
} from '@idem/core';
import {
  checkFunction,
  checkOptionsObject,
  DEFAULT_TIMEOUT_MARGIN_MS,
  type EngineOptions,
  engineForInvocation,
  type LambdaContextLike,
  MIN_STORE_CALL_MS,
  remainingMs,
  requestFor,
  type ScopeOption,
  validateEngineOptions,
} from './lambda-engine.js';
import type { IdempotencyInfo } from './make-idempotent.js';

/**
 * The handler's view of a record's execution: the engine's, with a `signal` that also aborts
 * (a `TimeoutError` `DOMException`) when the batch gives the record up at its deadline
 * (`timed_out`). Own enumerable members in the engine's order (`{ ...idempotency }` works);
 * the signal is made only when read.
 */
class RecordInfo implements IdempotencyInfo {
  // Declared only: made in the constructor, in the engine context's order.
  declare readonly fence: number;
  declare readonly signal: AbortSignal;
  declare readonly storageKey: string;
  declare readonly originId: string;
  #controller: AbortController | undefined;
  #gaveUp: unknown;
  constructor(execution: IdempotencyInfo) {
    this.fence = execution.fence;
    Object.defineProperty(this, 'signal', {
      enumerable: true,
      configurable: true,
      get: () => this.#signal(execution),
    });
    this.storageKey = execution.storageKey;
    Object.defineProperty(this, 'originId', {
      enumerable: true,
      configurable: true,
      get: () => execution.originId,
    });
  }
  #signal(execution: IdempotencyInfo): AbortSignal {
    if (this.#controller) return this.#controller.signal;
    const controller = new AbortController();
    this.#controller = controller;
    const lease = execution.signal;
    if (this.#gaveUp !== undefined) controller.abort(this.#gaveUp);
    else if (lease.aborted) controller.abort(lease.reason);
    else lease.addEventListener('abort', () => controller.abort(lease.reason), { once: true });
    return controller.signal;
  }
  /** The handler read its signal: the give-up's abort may be what it failed of. */
  signalRead(): boolean {
    return this.#controller !== undefined;
  }
  /** The batch reports the record `timed_out` and answers: the handler should stop. */
  giveUp(): void {
    if (this.#gaveUp !== undefined) return;
    this.#gaveUp = new DOMException(
      'The batch gave this record up at its deadline (timed_out): it is delivered again',
      'TimeoutError',
    );
    this.#controller?.abort(this.#gaveUp);
  }
}

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
 * - `processed`: the handler ran and its outcome was recorded (or, when it could not be
 *   stored, a "not recorded" marker was: `error` says why; it never runs again);
 * - `replayed`: a recorded outcome exists (a redelivery, or a failure recorded as final):
 *   the handler did not run;
 * - `failed`: the handler threw, a duplicate is still in progress, or the store failed;
 * - `timed_out`: the invocation's deadline came while the record ran (its handler's `signal`
 *   aborts; it goes on under its lease, fenced, and is given back if it had not started);
 * - `not_attempted`: skipped after an earlier failure of an ordered source, or at the deadline
 *   (less than `MIN_STORE_CALL_MS`, 10 ms, left before it to claim the key);
 * - `rejected` (Kinesis, DynamoDB Streams): the record can never be processed as it is (the
 *   key function found no key or threw, an invalid key, another payload under a recorded key:
 *   `error` says which): not sent back, so it does not block the shard at every delivery.
 *   SQS reports these `failed` and sends them back: the queue's redrive policy
 *   (`maxReceiveCount`) moves them to its dead-letter queue.
 */
export type RecordStatus =
  | 'processed'
  | 'replayed'
  | 'failed'
  | 'timed_out'
  | 'not_attempted'
  | 'rejected';

/** A record's fate, for `onRecord`. */
export interface RecordReport<TRecord> {
  record: TRecord;
  itemIdentifier: string;
  status: RecordStatus;
  /** What failed, for `failed` and `rejected`. */
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
   * delivery of the record. @default the source's id: SQS `messageId`, Kinesis
   * `eventSourceARN` + `eventID` (stream, shard and sequence number), DynamoDB Streams `eventID`
   */
  key?: (record: TRecord, context: TContext) => JsonValue;
  /**
   * The part of a record fingerprinted (another payload under the same key fails the record
   * with `MismatchError`), or `false` for none. @default the body / data / stream images,
   * which never change between deliveries
   */
  payload?: ((record: TRecord, context: TContext) => JsonValue) | false;
  /**
   * What keys are unique within. @default `functionScope`: `['lambda', context.functionName]`
   * (the default keys are the source's own ids, which no caller chooses)
   */
  scope?: ScopeOption<TRecord, TContext>;
  /**
   * Time kept in hand before Lambda's deadline: a record still running then is reported as
   * failed (with every record not yet attempted) and the response returned, so that Lambda
   * does not time out and redeliver the whole batch; at most half the time left. @default 1_000
   */
  timeoutMarginMs?: number;
  /**
   * Told what happened to each record (logging, metrics). Errors it throws are ignored, and so
   * is the rejection of a promise it returns (not awaited).
   */
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
  /**
   * A record that can never be processed as it is (see {@link RecordStatus} `rejected`) is
   * reported `rejected` and left out of `batchItemFailures` (stream sources, where sending it
   * back would block the shard until it expires), or reported `failed` and sent back (SQS,
   * where the redrive policy dead-letters it). @default false
   */
  rejectsPermanentFailures?: boolean;
}

const TIMED_OUT = Symbol('timed out');

/**
 * Thrown instead of running the handler when the key was acquired only after the batch gave
 * the record up (a slow acquisition past the deadline): never final, the key is released.
 */
const NOT_STARTED = new Error('The batch gave this record up before its handler started');

/**
 * What a handler that read its signal threw once the batch had given its record up (reported
 * `timed_out` and sent back; its signal aborted): never final, the key is released for the
 * redelivery, whatever the policy says (`everythingFinal` would otherwise replay the abort as
 * the record's answer). A handler that never read its signal cannot have been stopped by the
 * give-up: its failure is its own, and the policy's to judge (as before the deadline).
 */
class GivenUpFailure {
  constructor(readonly error: unknown) {}
}

/**
 * What the policy threw of a record's success, boxed: a policy may throw anything (`undefined`
 * too), and the box alone tells that it threw.
 */
interface Judged {
  policyFailed?: { error: unknown };
}

/** Builds a batch handler for a source; see `makeSqsBatchHandler` and its siblings. */
export function makeBatchHandler<TRecord, TContext extends LambdaContextLike>(
  source: BatchSource<TRecord>,
  handler: RecordHandler<TRecord, TContext>,
  options: BatchOptions<TRecord, TContext>,
): (event: { Records?: TRecord[] }, context: TContext) => Promise<BatchResponse> {
  checkFunction('handler', handler);
  checkOptionsObject(options);
  const { key, payload, scope, timeoutMarginMs, onRecord, ...engineOptions } = options;
  checkFunction('key', key, true);
  if (payload !== false) checkFunction('payload', payload, true);
  checkFunction('onRecord', onRecord, true);
  const margin = timeoutMarginMs ?? DEFAULT_TIMEOUT_MARGIN_MS;
  if (!(typeof margin === 'number' && Number.isFinite(margin) && margin >= 0))
    throw new InvalidInputError('timeoutMarginMs must be a finite, non-negative number of ms');
  validateEngineOptions(engineOptions);
  const policy = (engineOptions.isFinal ?? successOnly) as OutcomePolicy<unknown>;
  // A record given up before its handler started, or whose handler failed after the give-up
  // once it had read its signal (the abort's failure), is released, whatever the policy says.
  // What the policy throws of a success (or a Promise it answers) goes to `judged`: the engine
  // records that success anyway, then throws the policy's error, which is no failure of the
  // record (sent back, it only replayed; on an ordered shard it held up the records behind it).
  const recordOptions = (judged: Judged) => ({
    ...engineOptions,
    isFinal: (settled: Parameters<OutcomePolicy<unknown>>[0]) => {
      if (!settled.ok)
        return (
          !(settled.error === NOT_STARTED || settled.error instanceof GivenUpFailure) &&
          policy(settled)
        );
      try {
        return outcomePolicyAnswer(policy(settled));
      } catch (error) {
        judged.policyFailed = { error };
        throw error;
      }
    },
  });
  const report = (r: RecordReport<TRecord>) => {
    try {
      // A broken listener must not fail the batch: nor, async and rejecting, the invocation
      // (Lambda's runtime fails it at an unhandled rejection, and the whole batch comes back).
      const result: unknown = onRecord?.(r);
      // Any thenable (a promise of another realm too), not only this realm's Promise.
      if (isThenable(result)) Promise.resolve(result).catch(() => {});
    } catch {
      // As above.
    }
  };

  return async (event, context) => {
    // An event without `Records` (not a batch: misrouted, a direct call) fails too, never an
    // empty success: nothing would run and Lambda would neither retry it nor dead-letter it.
    const records = event?.Records;
    if (!Array.isArray(records))
      throw new InvalidInputError('The event has no Records array: not a batch event');
    const failures: BatchItemFailure[] = [];
    if (records.length === 0) return { batchItemFailures: failures };
    // Every record must be reportable before any runs: Lambda treats a failure without an
    // identifier as the whole batch failing, so a malformed batch fails as a whole, untouched.
    const identifiers = records.map((record) => source.itemIdentifier(record));
    const remaining = remainingMs(context);
    // A margin as long as the time left would attempt nothing, at every delivery, forever.
    const deadline = performance.now() + remaining - Math.min(margin, remaining / 2);
    const ordered = source.ordered(records);
    let stop = false;
    for (const [index, record] of records.entries()) {
      const itemIdentifier = identifiers[index] as string;
      const fail = (status: RecordStatus, error?: unknown) => {
        failures.push({ itemIdentifier });
        report({ record, itemIdentifier, status, error });
      };
      // Too close to the deadline to claim a key (the engine would refuse the claim unsent):
      // this record and every later one are delivered again, untouched.
      if (stop || !(deadline - performance.now() >= MIN_STORE_CALL_MS)) {
        fail('not_attempted');
        continue;
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      let request: ReturnType<typeof requestFor>;
      try {
        request = requestFor(
          record,
          context,
          (key ?? source.defaultKey)(record, context),
          payload === false ? undefined : (payload ?? source.defaultPayload)(record, context),
          scope,
        );
      } catch (error) {
        // The engine refused what the key, payload or scope function gave (no key, an invalid
        // one, a payload that is no canonical JSON): the same at every delivery of this record.
        // What those functions threw themselves may be transient: sent back.
        if (source.rejectsPermanentFailures && isPermanent(error))
          report({ record, itemIdentifier, status: 'rejected', error });
        else {
          fail('failed', error);
          if (ordered) stop = true;
        }
        continue;
      }
      // What the handler itself threw is never taken for the engine's verdict on the record.
      let thrownByHandler = false;
      let info: RecordInfo | undefined;
      let gaveUp = false;
      const judged: Judged = {};
      try {
        // One engine per record: its lease and hold are capped by the time left now, so a
        // record that outlives the invocation frees its key at the deadline, not later.
        // Its claim is bounded by the batch's deadline (edge34): not sent with less than
        // MIN_STORE_CALL_MS left, given up at the deadline otherwise, so no claim lands after
        // the batch answered (the record is reported and delivered again).
        const engine = engineForInvocation(recordOptions(judged), context, {
          callsUntil: deadline,
        });
        const run = engine.execute(request, async (ctx) => {
          // (Acquired after the answer: the handler must not start behind the redelivery.)
          if (gaveUp) throw NOT_STARTED;
          const view = new RecordInfo(ctx);
          info = view;
          try {
            return await handler(record, context, view);
          } catch (error) {
            thrownByHandler = true;
            // (After the give-up nobody awaits `run`: the wrapper only reaches the policy.)
            throw gaveUp && view.signalRead() ? new GivenUpFailure(error) : error;
          }
        });
        // No clock (a local call, a test): the deadline is Infinity and no timer is armed
        // (Node fires a timer of Infinity, or of more than 2^31-1 ms, after 1 ms).
        const deadlinePassed = Number.isFinite(deadline)
          ? new Promise<typeof TIMED_OUT>((resolve) => {
              timer = setTimeout(
                () => resolve(TIMED_OUT),
                Math.min(MAX_TIMER_MS, Math.max(0, deadline - performance.now())),
              );
            })
          : undefined;
        const result = deadlinePassed ? await Promise.race([run, deadlinePassed]) : await run;
        if (result === TIMED_OUT) {
          // The record goes on in the background under its lease (capped at the deadline);
          // its outcome, if it lands while it still owns the key, is replayed to the
          // redelivery (after a takeover its writes are refused: owner-checked). Its signal
          // aborts now, before the answer (after which Lambda freezes the environment, and a
          // later invocation thaws it): a handler that honours it stops instead of running on
          // beside the redelivery.
          gaveUp = true;
          info?.giveUp();
          run.catch(() => {});
          fail('timed_out');
          stop = true;
          continue;
        }
        report({ record, itemIdentifier, status: result.replayed ? 'replayed' : 'processed' });
      } catch (error) {
        // A claim still unanswered at the deadline is given up there by the engine's bound (its
        // timer armed before the race's), or refused unsent with less than MIN_STORE_CALL_MS
        // left (the time since this record's check went by under load, a digest on the thread
        // pool): the record was given up at the deadline, as at TIMED_OUT, before its handler
        // started (a CI lane reported such a claim `failed`).
        if (
          !thrownByHandler &&
          info === undefined &&
          deadline - performance.now() < MIN_STORE_CALL_MS
        ) {
          gaveUp = true;
          fail('timed_out');
          stop = true;
          continue;
        }
        // A kept failure that could not be stored is done only if its not-recorded marker
        // landed: without it nothing answers the redelivery (a store outage or a takeover
        // while writing it), and the record was dropped with nothing recorded (rev31a).
        const unmarked = thrownByHandler && markerFailureOf(error) !== undefined;
        const settled =
          judged.policyFailed && Object.is(error, judged.policyFailed.error)
            ? 'processed' // recorded, the policy's error reported
            : unmarked
              ? undefined
              : settledStatus(error);
        if (settled) report({ record, itemIdentifier, status: settled, error });
        else if (!thrownByHandler && source.rejectsPermanentFailures && isPermanent(error))
          report({ record, itemIdentifier, status: 'rejected', error });
        else {
          fail('failed', error);
          if (ordered) stop = true;
        }
      } finally {
        clearTimeout(timer);
      }
    }
    return { batchItemFailures: failures };
  };
}

/**
 * Errors that mean the record is done, never to be run again: redelivering it would only meet
 * the same answer at every delivery (and block an ordered shard behind it for good).
 * - a failure recorded as final (`isFinal: everythingFinal`) replays as `ReplayedFailureError`;
 * - an outcome that could not be stored (not serialisable, too large) left a marker.
 */
function settledStatus(error: unknown): 'processed' | 'replayed' | undefined {
  if (error instanceof ReplayedFailureError) return 'replayed';
  if (
    isIdemError(error) &&
    (error.code === 'OUTCOME_NOT_RECORDED' || error.code === 'OUTCOME_TOO_LARGE')
  )
    return 'processed';
  return undefined;
}

/**
 * Errors a redelivery of the same record would meet again: another payload under a recorded
 * key, a key or fingerprint the engine refuses.
 */
function isPermanent(error: unknown): boolean {
  return (
    isIdemError(error) &&
    (error.code === 'MISMATCH' ||
      error.code === 'INVALID_KEY' ||
      error.code === 'INVALID_INPUT' ||
      error.code === 'NOT_CANONICAL')
  );
}
