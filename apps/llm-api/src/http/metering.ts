import { deriveKey, StoreUnavailableError } from '@idem/core';
import type { IdempotencyContext } from '@idem/http';
import type { Ledger } from '../ledger/ledger.js';
import { type BillBacklog, billPersistently } from '../ledger/persistent-bill.js';
import type { ChatModel, ModelInput, Usage } from '../model/model.js';

/** What a billed execution is known by. */
export interface BillingTarget {
  messageId: string;
  /** The execution's fencing token (0 for a request sent without a key). */
  fence: number;
  /**
   * The storage key of the request's record (none without a key): a ledger that bills in
   * the completion's transaction (PostgreSQL) stages the bill under it, where the
   * completion finds it.
   */
  recordKey?: string;
}

/**
 * The message id of a request: derived from its logical request (`originId`) when the
 * request has a key, so every execution of it (a retry after a failure, a takeover after a
 * lost lease) bills the same ledger entry, while the same key used again once its record's
 * retention passed (a new request) bills a new one; random otherwise.
 */
export function billingTarget(
  prefix: string,
  context: IdempotencyContext | undefined,
): BillingTarget {
  if (!context)
    return { messageId: `${prefix}${crypto.randomUUID().replaceAll('-', '')}`, fence: 0 };
  return {
    messageId: `${prefix}${context.originId}`,
    fence: context.fence,
    recordKey: context.storageKey,
  };
}

/**
 * The key forwarded to an upstream model: derived from the storage key (itself derived from
 * the client's principal, operation and key), so retries of one logical request carry the
 * same upstream key and different requests never share one.
 */
export function upstreamKey(context: IdempotencyContext | undefined): string | undefined {
  return context ? deriveKey(['idem/llm-api/upstream/v1', context.storageKey]) : undefined;
}

/** How a bill that met a store outage is retried, and when the caller is told to come back. */
export interface MeteringOptions {
  /**
   * How long the answer may wait for a bill the store cannot take, in ms (the app uses the
   * lease). Past it `answerLate` is called: the client is answered (503) while the bill,
   * and then the recording of the answer, go on in the background.
   */
  billWaitMs: number;
  /** Longest retrying of a bill, in ms, foreground and background together. */
  billRetryMs: number;
  /**
   * A stream waiting this long for its model or its bill sends an SSE comment
   * (`: keep-alive`), and again every as long: shorter than the lease (the app uses a third
   * of it), so that @idem/http never takes it for a body that stopped for good.
   */
  keepAliveMs: number;
  /** Aborts at the end of a graceful shutdown: a bill still retrying gives up (503). */
  stop?: AbortSignal;
  /**
   * The bills retrying right now, shared by every request: while it is full, no new model
   * run starts (503 before anything ran).
   */
  backlog?: BillBacklog;
  /** Answers the client now: the execution goes on without it (see `lateAnswers`). */
  answerLate?: (() => void) | undefined;
}

/**
 * The metering of one request. Only a request with a key may be answered late (503, then
 * 409, then the replay): its answer is recorded for the retry. A request without a key has
 * nothing to come back to: answered late while its bill went on, the client would pay for an
 * answer it never got, then again for its retry's. Its bill is given up after `billWaitMs`
 * instead (503, nothing billed for the model run it did not get).
 */
export function meteringFor(
  metering: MeteringOptions,
  context: IdempotencyContext | undefined,
  answerLate: (() => void) | undefined,
): MeteringOptions {
  if (context) return { ...metering, answerLate };
  return {
    ...metering,
    billRetryMs: Math.min(metering.billRetryMs, metering.billWaitMs),
    answerLate: undefined,
  };
}

/**
 * Runs the model as one metered execution: counts it, and when it completes bills its
 * tokens under the message id with the execution's fence before the caller may answer.
 * Billing happens inside the idempotent operation, so a replay never bills, and the fence
 * makes a stale executor's bill fail (StaleFenceError) instead of counting twice. A bill
 * the store cannot take for a while is retried for up to `billRetryMs` (see
 * `billPersistently`): the model has run, and giving up would make the client's retry run
 * it again. The client is not kept waiting that long: see `answerLate`.
 */
export async function* metered(
  model: ChatModel,
  ledger: Ledger,
  input: ModelInput,
  target: BillingTarget,
  options: MeteringOptions,
): AsyncGenerator<string, Usage, void> {
  // Nothing has run yet: refusing now costs the client a retry, never a second execution.
  if (options.backlog?.full) {
    throw new StoreUnavailableError(
      `${options.backlog.size} bills are waiting for the ledger; no new model run until they land`,
    );
  }
  await ledger.count('model_started');
  let usage: Usage;
  try {
    usage = yield* model.generate(input);
  } catch (error) {
    await ledger.count('model_failed').catch(() => undefined);
    throw error;
  }
  const billing = billPersistently(
    ledger,
    {
      messageId: target.messageId,
      model: input.model,
      promptTokens: usage.prompt_tokens,
      completionTokens: usage.completion_tokens,
      totalTokens: usage.total_tokens,
      fence: target.fence,
      billedAt: Date.now(),
    },
    {
      retryForMs: options.billRetryMs,
      stop: options.stop,
      backlog: options.backlog,
      recordKey: target.recordKey,
    },
  );
  // The model has run: the bill is never given up for the client's sake (a 503 now would
  // release the key and the retry would run the model again). Past `billWaitMs` the client
  // is answered and told to retry with its key; it gets 409 until the answer is recorded,
  // then the replay.
  const late = setTimeout(() => options.answerLate?.(), options.billWaitMs);
  try {
    await billing;
  } finally {
    clearTimeout(late);
  }
  // The bill is the record; the counter is monitoring. Once the bill landed, the answer must
  // go out (and be recorded): failing it here would make the retry run the model again.
  await ledger.count('model_completed').catch((error: unknown) => {
    console.warn(`[llm-api] counter model_completed not updated: ${String(error)}`);
  });
  return usage;
}
