import { setTimeout as sleep } from 'node:timers/promises';
import { isIdemError } from '@idem/core';
import type { BillResult, Ledger, LedgerEntry } from './ledger.js';

/** How {@link billPersistently} retries. */
export interface BillRetryOptions {
  /** Longest time to keep retrying after the first failure, in ms (the app uses the lease). */
  retryForMs: number;
  /**
   * Stops retrying at once, an attempt in flight included: the server is about to close
   * its connections (the end of a graceful shutdown), so the request gets its 503 while it
   * can still be sent.
   */
  stop?: AbortSignal | undefined;
  /** Counts this bill while it retries (from its first failure until it settles). */
  backlog?: BillBacklog | undefined;
  /** The storage key of the request's record, handed to `Ledger.bill` (see there). */
  recordKey?: string | undefined;
}

/**
 * The bills retrying through a store failure right now, and how many may. Each one holds a
 * model's answer, a lease kept by heartbeats and a retry every 500 ms, for up to
 * `billRetryMs` (10 minutes) after its client was answered: without a bound, a ledger that
 * keeps failing while the rest of the store answers piled one up per request (2,000 requests,
 * 2,000 of them, 3,500 bill attempts a second). Once `max` are retrying, no new model run
 * starts (see `metered`): those requests get 503 before anything ran, so the bound never costs
 * a second execution.
 */
export class BillBacklog {
  private retrying = 0;

  constructor(readonly max: number) {
    if (!(Number.isSafeInteger(max) && max > 0)) {
      throw new RangeError('the bill backlog must be a positive integer');
    }
  }

  /** Bills retrying now. */
  get size(): number {
    return this.retrying;
  }

  /** Whether `max` bills are retrying: no new model run may start. */
  get full(): boolean {
    return this.retrying >= this.max;
  }

  /** @internal a bill failed for the first time. */
  enter(): void {
    this.retrying += 1;
  }

  /** @internal a bill that had failed settled. */
  leave(): void {
    this.retrying -= 1;
  }
}

/** Redis replies that say "not now" rather than "never": a restart, a failover, a busy script. */
const TRANSIENT_REPLY = /^(LOADING|BUSY|TRYAGAIN|MASTERDOWN|READONLY|CLUSTERDOWN|NOREPLICAS)\b/;

/**
 * Whether a store failure may go away by itself (a connection that dropped, a timeout, a
 * store restarting), as opposed to a refusal that retrying cannot cure: a Redis error reply
 * such as `WRONGTYPE`, or a DynamoDB client error (validation, missing table) that the SDK
 * does not mark retryable.
 */
export function isTransientStoreFailure(error: unknown): boolean {
  if (!isIdemError(error, 'STORE_UNAVAILABLE')) return false;
  const cause = (error as { cause?: unknown }).cause as
    | { name?: unknown; message?: unknown; $fault?: unknown; $retryable?: unknown }
    | undefined;
  if (cause && typeof cause === 'object') {
    if (cause.name === 'ReplyError') return TRANSIENT_REPLY.test(String(cause.message));
    if (cause.$fault === 'client' && !cause.$retryable) return false;
  }
  return true;
}

/**
 * Bills `entry`, retrying while the store is unreachable. The model has already run when
 * the bill is written: answering a store failure here with 503 would leave the key in
 * progress until its lease passes, and the client's retry would then take the key over and
 * run the model a second time. Retrying instead lets an outage shorter than the lease end
 * in one execution, billed once and recorded.
 *
 * It does not stop when the execution's lease could not be renewed in time (its signal
 * aborts): the store may be back a moment later, before any retry took the key over, and a
 * late bill is safe, because the fence refuses it once a takeover billed.
 *
 * Resolves with the bill's result once it lands. Rejects at once with `StaleFenceError`
 * (another execution took over and billed) and with a store failure that retrying cannot
 * cure (see {@link isTransientStoreFailure}); with the last store failure once `retryForMs`
 * passed since the first failure, or once `stop` aborts. The ledger call itself MUST be
 * bounded (see `boundLedger`), so every attempt ends: the whole wait is at most
 * `retryForMs` plus one store timeout.
 */
export async function billPersistently(
  ledger: Ledger,
  entry: LedgerEntry,
  options: BillRetryOptions,
): Promise<BillResult> {
  const { retryForMs, stop, backlog, recordKey } = options;
  let deadline: number | undefined;
  let pauseMs = 50;
  let failure: unknown;
  try {
    for (;;) {
      const attempt = ledger.bill(entry, recordKey);
      try {
        return await (failure === undefined || !stop ? attempt : unlessStopped(attempt, stop));
      } catch (error) {
        if (error === STOPPED) throw failure;
        if (!isTransientStoreFailure(error)) throw error;
        if (failure === undefined) backlog?.enter();
        failure = error;
      }
      deadline ??= Date.now() + retryForMs;
      const wait = Math.min(pauseMs, deadline - Date.now());
      if (wait <= 0 || stop?.aborted) throw failure;
      try {
        await sleep(wait, undefined, { signal: stop });
      } catch {
        throw failure;
      }
      pauseMs = Math.min(pauseMs * 2, 500);
    }
  } finally {
    if (failure !== undefined) backlog?.leave();
  }
}

const STOPPED = Symbol('stopped');

/** `work`, or a rejection with {@link STOPPED} as soon as `stop` aborts. */
function unlessStopped<T>(work: Promise<T>, stop: AbortSignal): Promise<T> {
  work.catch(() => undefined); // an abandoned attempt's late failure is not unhandled
  if (stop.aborted) return Promise.reject(STOPPED);
  return new Promise<T>((resolve, reject) => {
    const onStop = () => reject(STOPPED);
    stop.addEventListener('abort', onStop, { once: true });
    work.finally(() => stop.removeEventListener('abort', onStop)).then(resolve, reject);
  });
}
