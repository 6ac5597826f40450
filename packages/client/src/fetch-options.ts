import type { ReplayableBody } from './request-body.js';
import { abortableSleep, isRetryableStatus } from './retry-policy.js';

/** `fetch`'s signature, as the openai and Anthropic SDKs accept it. */
export type FetchFunction = (
  input: string | URL | Request,
  init?: RequestInit,
) => Promise<Response>;

/** What a custom key function sees of the request. */
export interface KeyRequest {
  method: string;
  url: string;
  headers: Headers;
  /** The body as it will be sent on every attempt (one-shot streams already buffered). */
  body: ReplayableBody | undefined;
}

/**
 * How a call gets its key when the caller did not set the key header:
 * - `'random'`: a fresh UUID per logical call;
 * - `'content'`: derived from method, URL and body bytes with `deriveKey` from `@idem/core`,
 *   so the same request made again (even by a restarted process) carries the same key;
 * - a function returning the key (it MUST return the same key for the same logical call).
 */
export type KeyStrategy =
  | 'random'
  | 'content'
  | ((request: KeyRequest) => string | Promise<string>);

/** Why an attempt did not produce a final answer. */
export type AttemptFailure = 'network' | 'timeout' | 'status';

/** Reported to `onAttempt` after every attempt, once the client has decided what follows. */
export interface AttemptEvent {
  /** 1 for the first attempt. */
  attempt: number;
  method: string;
  url: string;
  /** The idempotency key sent, or `undefined` for a method that gets none. */
  key: string | undefined;
  /** HTTP status, when the attempt got a response. */
  status?: number;
  /** The error, when the attempt got no response. */
  error?: unknown;
  /** The response carried the replay marker. */
  replayed: boolean;
  /** Set when the attempt's outcome was retryable: network error, timeout or retryable status. */
  failure?: AttemptFailure;
  /** Another attempt follows. */
  willRetry: boolean;
  /** Wait before the next attempt, in ms, when one follows. */
  delayMs?: number;
  /** Duration of this attempt until its response headers or its error, in ms. */
  durationMs: number;
}

/** Options of {@link createIdempotentFetch}. Durations are milliseconds. */
export interface IdempotentFetchOptions {
  /** The fetch that sends each attempt. @default globalThis.fetch */
  fetch?: FetchFunction;
  /** Methods that get an idempotency key (and so are retried). @default ['POST', 'PATCH'] */
  methods?: readonly string[];
  /** Where a key comes from when the caller sent none. @default 'random' */
  key?: KeyStrategy;
  /** Request header that carries the key. @default 'Idempotency-Key' */
  headerName?: string;
  /**
   * How a generated key is written: `'sf-string'` as a Structured Field String (`"…"`) per
   * draft-ietf-httpapi-idempotency-key-header, or `'bare'` as Stripe clients send it. A key
   * header the caller set is sent unchanged.
   * @default 'sf-string'
   */
  keyFormat?: 'sf-string' | 'bare';
  /** Response header whose value `true` marks a replay. @default 'Idempotent-Replayed' */
  replayHeader?: string;
  /** Most attempts per logical call, the first included. @default 5 */
  maxAttempts?: number;
  /** Backoff ceiling of the first retry; it doubles each retry. @default 250 */
  initialDelayMs?: number;
  /** Cap of the backoff ceiling. @default 10_000 */
  maxDelayMs?: number;
  /** Cap applied to a server's `Retry-After`. @default 60_000 */
  maxRetryAfterMs?: number;
  /**
   * How long a keyed call keeps retrying while the server answers 409 (the first execution
   * is still running), counted from the first 409. These retries do not use up
   * `maxAttempts`, so a slow first execution (an LLM call) is waited out, not given up on.
   * @default 60_000
   */
  inProgressWaitMs?: number;
  /**
   * Limit of one attempt until its response headers arrive; past it the attempt is aborted
   * and retried. The body is not limited by it (use the caller's signal). @default undefined (none)
   */
  attemptTimeoutMs?: number;
  /**
   * Limit of the whole logical call, from the call until a response: no attempt runs and no wait
   * starts past it. @default undefined (none)
   */
  deadlineMs?: number;
  /** Which statuses are retried. @default 408, 409, 425, 429 and 5xx */
  isRetryableStatus?: (status: number) => boolean;
  /** Largest one-shot stream body buffered so that it can be resent. @default 10_485_760 (10 MiB) */
  maxBufferedBodyBytes?: number;
  /** Called after every attempt; an exception it throws is ignored. */
  onAttempt?: (event: AttemptEvent) => void;
  /** Waits between attempts (tests inject one). It SHOULD reject when `signal` aborts. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Random source of the jitter, in [0, 1). @default Math.random */
  random?: () => number;
  /** Clock, in epoch ms (also used to read `Retry-After` dates). @default Date.now */
  now?: () => number;
}

/** What {@link getIdempotencyInfo} tells about a response. */
export interface IdempotencyInfo {
  /** The key sent on every attempt, or `undefined` for a method that gets none. */
  key: string | undefined;
  /** Attempts it took, the first included. */
  attempts: number;
  /** The server replayed a recorded outcome (the replay marker header was `true`). */
  replayed: boolean;
}

function positive(name: string, value: number, allowZero = false): number {
  if (!(Number.isFinite(value) && (allowZero ? value >= 0 : value > 0))) {
    throw new RangeError(`${name} must be a ${allowZero ? 'non-negative' : 'positive'} number`);
  }
  return value;
}

/** Options with their defaults applied and checked. */
export interface ResolvedFetchOptions {
  baseFetch: FetchFunction;
  methods: ReadonlySet<string>;
  strategy: KeyStrategy;
  headerName: string;
  keyFormat: 'sf-string' | 'bare';
  replayHeader: string;
  maxAttempts: number;
  backoff: { initialDelayMs: number; maxDelayMs: number; random: () => number };
  maxRetryAfterMs: number;
  inProgressWaitMs: number;
  /** `Infinity` when there is none. */
  attemptTimeoutMs: number;
  deadlineMs: number | undefined;
  retryableStatus: (status: number) => boolean;
  maxBuffered: number;
  sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  now: () => number;
}

/** Applies defaults; throws `RangeError` on a bad value. */
export function resolveFetchOptions(options: IdempotentFetchOptions): ResolvedFetchOptions {
  const baseFetch: FetchFunction =
    options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const methods = new Set((options.methods ?? ['POST', 'PATCH']).map((m) => m.toUpperCase()));
  const strategy = options.key ?? 'random';
  const headerName = options.headerName ?? 'Idempotency-Key';
  const keyFormat = options.keyFormat ?? 'sf-string';
  const replayHeader = options.replayHeader ?? 'Idempotent-Replayed';
  const maxAttempts = options.maxAttempts ?? 5;
  if (!(Number.isSafeInteger(maxAttempts) && maxAttempts >= 1)) {
    throw new RangeError('maxAttempts must be an integer of at least 1');
  }
  const backoff = {
    initialDelayMs: positive('initialDelayMs', options.initialDelayMs ?? 250, true),
    maxDelayMs: positive('maxDelayMs', options.maxDelayMs ?? 10_000, true),
    random: options.random ?? Math.random,
  };
  const maxRetryAfterMs = positive('maxRetryAfterMs', options.maxRetryAfterMs ?? 60_000, true);
  const inProgressWaitMs = positive('inProgressWaitMs', options.inProgressWaitMs ?? 60_000, true);
  const attemptTimeoutMs =
    options.attemptTimeoutMs === undefined
      ? Number.POSITIVE_INFINITY
      : positive('attemptTimeoutMs', options.attemptTimeoutMs);
  const deadlineMs =
    options.deadlineMs === undefined ? undefined : positive('deadlineMs', options.deadlineMs);
  const retryableStatus = options.isRetryableStatus ?? isRetryableStatus;
  const maxBuffered = positive(
    'maxBufferedBodyBytes',
    options.maxBufferedBodyBytes ?? 10 * 1024 * 1024,
    true,
  );
  const sleep = options.sleep ?? abortableSleep;
  const now = options.now ?? Date.now;
  return {
    baseFetch,
    methods,
    strategy,
    headerName,
    keyFormat,
    replayHeader,
    maxAttempts,
    backoff,
    maxRetryAfterMs,
    inProgressWaitMs,
    attemptTimeoutMs,
    deadlineMs,
    retryableStatus,
    maxBuffered,
    sleep,
    now,
  };
}
