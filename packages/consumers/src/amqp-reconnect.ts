import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidInputError } from '@idem/core';
import { MAX_TIMER_MS } from './engine-verdicts.js';

/** The reconnection options of `consumeAmqp` (used only with `openChannel`). */
export interface AmqpReconnectOptions {
  /**
   * The first wait before a lost consumer opens a channel again (`openChannel`); each failed
   * attempt doubles it, up to `reconnectMaxDelayMs`. Each wait is 80 % to 100 % of its value, by
   * a factor each consumer draws once (so that consumers cut by one outage do not all come
   * back in step, and a later wait is never shorter than an earlier one).
   * @default 1_000
   */
  reconnectDelayMs?: number;
  /**
   * The longest wait between two attempts. The wait starts again at `reconnectDelayMs` only
   * after a channel that lasted at least this long, so a channel the broker closes at once,
   * every time, is not reopened every `reconnectDelayMs` (a reconnect storm). @default 30_000,
   * or `reconnectDelayMs` when that is set higher
   */
  reconnectMaxDelayMs?: number;
  /**
   * The time limit of one attempt: `openChannel()`, `prefetch` and `consume` together. An
   * attempt that passes it is abandoned (a channel it answers later is closed) and the next
   * one waits its turn. @default 10_000
   */
  openChannelTimeoutMs?: number;
}

/** Checked reconnection settings. */
export interface ReconnectPlan {
  delayMs: number;
  maxDelayMs: number;
  attemptTimeoutMs: number;
  /** The wait before attempt `attempt` (from 0), jittered: never less for a later attempt. */
  wait(attempt: number): number;
}

const isDuration = (value: unknown): value is number =>
  typeof value === 'number' && Number.isFinite(value) && value > 0 && value <= MAX_TIMER_MS;

export function reconnectPlan(options: AmqpReconnectOptions): ReconnectPlan {
  const { reconnectDelayMs = 1_000, openChannelTimeoutMs = 10_000 } = options;
  const given = options.reconnectMaxDelayMs;
  for (const [name, value] of Object.entries({
    reconnectDelayMs,
    reconnectMaxDelayMs: given ?? 30_000,
    openChannelTimeoutMs,
  }))
    if (!isDuration(value))
      throw new InvalidInputError(
        `${name} must be a number of ms above 0 and at most ${MAX_TIMER_MS}`,
      );
  // Not given, the longest wait follows a first wait set above its 30 s default (a
  // `reconnectDelayMs` of 60 s alone was refused, the error naming an option not set).
  const reconnectMaxDelayMs = given ?? Math.max(30_000, reconnectDelayMs);
  if (reconnectMaxDelayMs < reconnectDelayMs)
    throw new InvalidInputError(
      `reconnectMaxDelayMs (${reconnectMaxDelayMs}) must be at least reconnectDelayMs (${reconnectDelayMs})`,
    );
  // Drawn once per consumer, not per wait: consumers cut together still come back apart, and
  // one consumer's waits never shrink (drawn per wait, a wait at the cap could be a fifth
  // shorter than the one before it).
  const jitter = 0.8 + 0.2 * Math.random();
  return {
    delayMs: reconnectDelayMs,
    maxDelayMs: reconnectMaxDelayMs,
    attemptTimeoutMs: openChannelTimeoutMs,
    wait: (attempt) =>
      Math.min(reconnectDelayMs * 2 ** Math.min(Math.max(attempt, 0), 40), reconnectMaxDelayMs) *
      jitter,
  };
}

/** Resolves after `ms`, or at once when `signal` aborts; its timer never keeps the process alive. */
export const abortableDelay = (ms: number, signal: AbortSignal): Promise<void> =>
  sleep(ms, undefined, { signal, ref: false }).catch(() => undefined);

/**
 * Settles as `work` does, or rejects once `ms` passed or `signal` aborted (whichever comes
 * first), leaving no timer or listener behind.
 */
export function withinLimit<T>(work: Promise<T>, ms: number, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let finished = false;
    const finish = () => {
      finished = true;
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    };
    const onAbort = () => {
      if (finished) return;
      finish();
      reject(new Error('stopped'));
    };
    const timer = setTimeout(() => {
      if (finished) return;
      finish();
      reject(new Error(`openChannel: no channel consuming within ${ms} ms (openChannelTimeoutMs)`));
    }, ms);
    timer.unref?.();
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (value) => {
        if (finished) return;
        finish();
        resolve(value);
      },
      (error: unknown) => {
        if (finished) return;
        finish();
        reject(error);
      },
    );
  });
}

/**
 * A signal aborted once `first` or `second` is (at once if one already is); `dispose()` stops
 * listening to them. (Not `AbortSignal.any`: each message would leave a dependent signal on
 * the consumer's long-lived one until it is collected.)
 */
export function eitherAborted(
  first: AbortSignal,
  second: AbortSignal,
): { signal: AbortSignal; dispose(): void } {
  const either = new AbortController();
  const abort = () => either.abort();
  const dispose = () => {
    first.removeEventListener('abort', abort);
    second.removeEventListener('abort', abort);
  };
  if (first.aborted || second.aborted) abort();
  else {
    first.addEventListener('abort', abort, { once: true });
    second.addEventListener('abort', abort, { once: true });
  }
  return { signal: either.signal, dispose };
}
