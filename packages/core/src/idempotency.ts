import { randomUUID } from 'node:crypto';
import { type Clock, systemClock } from './clock.js';
import {
  IdemError,
  InProgressError,
  InvalidInputError,
  MismatchError,
  ReplayedFailureError,
  StoreUnavailableError,
} from './errors.js';
import type { IdemEventListener } from './events.js';
import { Execution, type ExecutionSettings } from './execution.js';
import { deriveStorageKey, type Scope } from './keys.js';
import { decodeOutcome, type StoredOutcome } from './outcome-codec.js';
import { jsonSerializer, type OutcomeSerializer } from './serializer.js';
import type { IdempotencyStore } from './store.js';
import { callStore } from './store-call.js';

/** How an operation ended, as the outcome policy sees it. */
export type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** Decides whether an outcome is final (recorded and replayed) or released for a retry. */
export type OutcomePolicy<T> = (settled: Settled<T>) => boolean;

/** Default policy: successes are final, failures are released so a retry runs again. */
export const successOnly: OutcomePolicy<unknown> = (settled) => settled.ok;

/**
 * Stripe's policy: once execution started, every outcome is final, failures included
 * (replayed as `ReplayedFailureError`).
 */
export const everythingFinal: OutcomePolicy<unknown> = () => true;

/** Bounded wait on a key in progress, instead of failing at once with `IN_PROGRESS`. */
export interface WaitOptions {
  /** Longest total wait, in ms. */
  timeoutMs: number;
  /** First poll interval in ms; grows by half each poll, up to 1 s. @default 50 */
  pollMs?: number;
}

/** Options of {@link createIdempotency}. Durations are milliseconds. */
export interface IdempotencyOptions<T = unknown> {
  /** Where records live. */
  store: IdempotencyStore;
  /** Lease of an in-progress record. @default 30_000 */
  leaseMs?: number;
  /** Heartbeat interval that renews the lease, or `false` for none. @default leaseMs / 3 */
  heartbeatMs?: number | false;
  /** Longest time heartbeats keep renewing one lease. @default 3_600_000 (1 h) */
  maxHoldMs?: number;
  /** How long a completed outcome is replayed. @default 86_400_000 (24 h) */
  retentionMs?: number;
  /** Time limit of one store call; past it the call fails with `STORE_UNAVAILABLE`. @default 5_000 */
  storeTimeoutMs?: number;
  /** Bounded wait on a key in progress, or `false` to fail at once with `IN_PROGRESS`. @default false */
  wait?: WaitOptions | false;
  /** Which outcomes are final. @default successOnly */
  isFinal?: OutcomePolicy<T>;
  /** How values become stored outcomes and back. @default jsonSerializer */
  serializer?: OutcomeSerializer<T>;
  /** Local clock for lease bookkeeping (the store decides expiry by its own clock). @default systemClock */
  clock?: Clock;
  /** Receives hit / miss / conflict / mismatch / lease-lost / store-error events. */
  onEvent?: IdemEventListener;
}

/** Identifies one logical request. */
export interface IdempotentRequest {
  /** The client's idempotency key (1..255 printable ASCII). */
  key: string;
  /** What the key is unique within (tenant, principal, operation). @default null */
  scope?: Scope;
  /** Fingerprint of the request (see `fingerprint()`); a retry with another one gets `MISMATCH`. @default '' */
  fingerprint?: string;
}

/** What the operation receives. */
export interface OperationContext {
  /** Fencing token; pass it to downstream writes that can reject a lower one. */
  fence: number;
  /** Aborts when the lease is lost. */
  signal: AbortSignal;
  /** The derived storage key (stable for a scope and key). */
  storageKey: string;
}

/** Result of `begin`: either the stored outcome to replay, or an execution to run. */
export type BeginResult =
  | { kind: 'replay'; outcome: StoredOutcome; storageKey: string }
  | { kind: 'acquired'; execution: Execution };

/** Result of `execute`. */
export interface ExecuteResult<T> {
  value: T;
  /** True when the value is a replay of a recorded outcome. */
  replayed: boolean;
}

/** The replay state machine bound to a store and options. */
export interface Idempotency<T = unknown> {
  /**
   * Runs `operation` at most once per live lease for the request's key and records its
   * final outcome; replays that outcome to every later call with the same key and
   * fingerprint.
   *
   * @throws InvalidKeyError, MismatchError, InProgressError, LeaseLostError,
   *   StoreUnavailableError, OutcomeTooLargeError, ReplayedFailureError, or the operation's
   *   own error when it was not final.
   */
  execute(
    request: IdempotentRequest,
    operation: (ctx: OperationContext) => Promise<T>,
  ): Promise<ExecuteResult<T>>;
  /**
   * The lower-level step: acquire (or wait, or replay). For callers that must start
   * answering before the operation ends (streamed HTTP responses): run, then call
   * `execution.complete(outcome)` or `execution.release()`.
   */
  begin(request: IdempotentRequest, options?: BeginOptions): Promise<BeginResult>;
  /** The options in force, defaults filled in. */
  readonly settings: ResolvedSettings;
}

/** Options of one `begin` call. */
export interface BeginOptions {
  /** Stops a bounded wait at once (the client went away); `begin` then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Resolved settings, exposed for integrations. */
export interface ResolvedSettings extends ExecutionSettings {
  wait: WaitOptions | false;
}

// setTimeout fires at once past 2^31 - 1 ms; durations that drive a timer must stay below.
const MAX_TIMER_MS = 2_147_483_647;

function positive(name: string, value: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!(Number.isFinite(value) && value > 0 && value <= max))
    throw new InvalidInputError(`${name} must be a positive number of ms, at most ${max}`);
  return value;
}

/** Resolves options and defaults; throws `InvalidInputError` on a bad value. */
export function resolveSettings<T>(options: IdempotencyOptions<T>): ResolvedSettings {
  if (!options.store) throw new InvalidInputError('A store is required');
  const leaseMs = positive('leaseMs', options.leaseMs ?? 30_000, MAX_TIMER_MS);
  const heartbeat = options.heartbeatMs === undefined ? leaseMs / 3 : options.heartbeatMs;
  if (heartbeat !== false && !(heartbeat > 0 && heartbeat < leaseMs)) {
    throw new InvalidInputError('heartbeatMs must be positive and shorter than leaseMs');
  }
  const listener = options.onEvent;
  return {
    store: options.store,
    clock: options.clock ?? systemClock,
    leaseMs,
    heartbeatMs: heartbeat,
    maxHoldMs: positive('maxHoldMs', options.maxHoldMs ?? 3_600_000),
    retentionMs: positive('retentionMs', options.retentionMs ?? 86_400_000),
    storeTimeoutMs: positive('storeTimeoutMs', options.storeTimeoutMs ?? 5_000, MAX_TIMER_MS),
    wait: options.wait ?? false,
    emit: (event) => {
      try {
        listener?.(event);
      } catch {
        // A broken listener must not break a request.
      }
    },
  };
}

// Node batches the entropy behind randomUUID: the cheapest 122 random bits per acquire.
const newOwner = (): string => randomUUID();

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Creates the replay state machine over a store. */
export function createIdempotency<T = unknown>(options: IdempotencyOptions<T>): Idempotency<T> {
  const settings = resolveSettings(options);
  const isFinal = (options.isFinal ?? successOnly) as OutcomePolicy<T>;
  const serializer = (options.serializer ?? jsonSerializer) as OutcomeSerializer<T>;

  async function begin(
    request: IdempotentRequest,
    beginOptions: BeginOptions = {},
  ): Promise<BeginResult> {
    const { signal } = beginOptions;
    const storageKey = deriveStorageKey(request.scope ?? null, request.key);
    const fingerprint = request.fingerprint ?? '';
    const { store, wait, emit } = settings;
    const waitUntil = wait ? performance.now() + wait.timeoutMs : 0;
    let poll = wait ? (wait.pollMs ?? 50) : 0;
    for (;;) {
      signal?.throwIfAborted();
      const owner = newOwner();
      const callStartedAt = settings.clock.now();
      let result: Awaited<ReturnType<IdempotencyStore['acquire']>>;
      try {
        result = await callStore('acquire', settings.storeTimeoutMs, () =>
          store.acquire({
            key: storageKey,
            fingerprint,
            owner,
            leaseMs: settings.leaseMs,
            retentionMs: settings.retentionMs,
          }),
        );
      } catch (error) {
        emit({ type: 'store_error', storageKey, operation: 'acquire', error });
        throw error;
      }
      if (result.kind === 'acquired') {
        emit({ type: 'miss', storageKey, fence: result.fence, takeover: result.takeover });
        const execution = new Execution(settings, storageKey, owner, {
          fence: result.fence,
          takeover: result.takeover,
          callStartedAt,
        });
        return { kind: 'acquired', execution };
      }
      const { record, now } = result;
      if (record.fingerprint !== fingerprint) {
        emit({ type: 'mismatch', storageKey });
        throw new MismatchError();
      }
      if (record.status === 'completed') {
        if (!record.outcome)
          throw new StoreUnavailableError('Store returned a completed record without an outcome');
        emit({ type: 'hit', storageKey });
        return { kind: 'replay', outcome: decodeOutcome(record.outcome), storageKey };
      }
      if (record.status !== 'in_progress') {
        throw new StoreUnavailableError(`Store returned a ${record.status} record as live`);
      }
      const retryAfterMs = Math.max(1, record.leaseUntil - now);
      emit({ type: 'conflict', storageKey, retryAfterMs });
      const remaining = waitUntil - performance.now();
      if (!wait || remaining <= 0) throw new InProgressError(retryAfterMs);
      await sleep(Math.min(poll, remaining, retryAfterMs + 1), signal);
      poll = Math.min(poll * 1.5, 1_000);
    }
  }

  async function execute(
    request: IdempotentRequest,
    operation: (ctx: OperationContext) => Promise<T>,
  ): Promise<ExecuteResult<T>> {
    const begun = await begin(request);
    if (begun.kind === 'replay') return { value: replay(begun.outcome), replayed: true };
    const execution = begun.execution;
    let settled: Settled<T>;
    try {
      const value = await operation({
        fence: execution.fence,
        signal: execution.signal,
        storageKey: execution.storageKey,
      });
      settled = { ok: true, value };
    } catch (error) {
      settled = { ok: false, error };
    }
    let final: boolean;
    let outcome: StoredOutcome | undefined;
    try {
      final = isFinal(settled);
      if (final)
        outcome = settled.ok
          ? wrapValue(serializer.serialize(settled.value))
          : failureOutcome(settled.error);
    } catch (policyError) {
      await execution.release().catch(() => {});
      throw policyError;
    }
    if (outcome) {
      await execution.complete(outcome);
    } else {
      // A failed release leaves the record in progress until its lease passes: reported
      // through events, while the caller gets what the operation did.
      await execution.release().catch(() => {});
    }
    if (settled.ok) return { value: settled.value, replayed: false };
    throw settled.error;
  }

  function replay(outcome: StoredOutcome): T {
    if (outcome.meta.kind === 'failure') {
      const failure = outcome.meta.failure as { name: string; message: string; code?: string };
      throw new ReplayedFailureError(failure);
    }
    return serializer.deserialize({
      meta: (outcome.meta.value ?? {}) as StoredOutcome['meta'],
      body: outcome.body,
    });
  }

  return { execute, begin, settings };
}

function wrapValue(outcome: StoredOutcome): StoredOutcome {
  return { meta: { kind: 'value', value: outcome.meta }, body: outcome.body };
}

function failureOutcome(error: unknown): StoredOutcome {
  const failure: { name: string; message: string; code?: string } =
    error instanceof Error
      ? { name: error.name, message: error.message }
      : { name: 'Error', message: String(error) };
  if (
    error instanceof IdemError ||
    (error instanceof Error && typeof (error as { code?: unknown }).code === 'string')
  ) {
    failure.code = (error as unknown as { code: string }).code;
  }
  return { meta: { kind: 'failure', failure }, body: new Uint8Array() };
}
