import { invalidRangeInput, quotedInput, unknownOptionMessage } from '@idem/core';
import { MAX_TIMER_MS } from './call-bounds.js';
import { type ConflictAnswer, isInProgressAnswer } from './in-progress.js';
import type { ReplayableBody } from './request-body.js';
import { abortableSleep, type DelaySettings, isRetryableStatus } from './retry-policy.js';
import { EVENT_ID_ENCODING_HEADER, GENERATION_HEADER } from './stream-resume.js';

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
 * - `'content'`: derived from method, URL (as fetch sends it, `new URL(url).href`) and body
 *   bytes with `deriveKey` from `@idem/core`, so the same request made again (even by a
 *   restarted process) carries the same key. The key
 *   holds nothing of the caller: it is per caller only if the server scopes keys by principal;
 *   against a server with one key space, two callers sending the same content replay each
 *   other's response. It MUST NOT be used there, nor where two identical requests are two
 *   intended calls (they are one call within the server's retention);
 * - a function returning the key (it MUST return the same key for the same logical call).
 */
export type KeyStrategy =
  | 'random'
  | 'content'
  | ((request: KeyRequest) => string | Promise<string>);

/**
 * Why an attempt did not produce a final answer: no response (`network`), no response headers
 * in time (`timeout`), a retryable status (`status`), or the idempotency server's answer that
 * the first request with the key still runs (`in-progress`).
 */
export type AttemptFailure = 'network' | 'timeout' | 'status' | 'in-progress';

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
  /** Set when the attempt's outcome was retryable: network error, timeout, retryable status or in progress. */
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
   * draft-ietf-httpapi-idempotency-key-header, or `'bare'` as Stripe clients send it (a key
   * with a space or tab at either end, or a leading `"`, is then refused with
   * `InvalidKeyError`: the server would read another key). A key header the caller set is sent
   * unchanged.
   * @default 'sf-string'
   */
  keyFormat?: 'sf-string' | 'bare';
  /**
   * Resume broken event streams: when the body of a keyed `text/event-stream` response from
   * an `@idem/http` server (it names its `Idempotent-Generation`) breaks, the client asks for
   * the rest with the same key, `Last-Event-ID` of the last event read and the generation,
   * and the body goes on where it broke, byte for byte, at most `maxResumes` times (each
   * resume is a call with this client's retries). `false` leaves a broken body broken.
   * @default { maxResumes: 5 }
   */
  resumeStreams?: boolean | { maxResumes?: number };
  /** Response header whose value `true` marks a replay. @default 'Idempotent-Replayed' */
  replayHeader?: string;
  /** Most attempts per logical call, the first included. @default 5 */
  maxAttempts?: number;
  /** Backoff ceiling of the first retry; it doubles each retry. @default 250 */
  initialDelayMs?: number;
  /** Cap of the backoff ceiling. @default 10_000 */
  maxDelayMs?: number;
  /**
   * Floor of every wait between attempts: no retry comes sooner, whatever the jitter draws or
   * the server's `Retry-After` says (`Retry-After: 0` gets backoff instead). @default 100
   */
  minDelayMs?: number;
  /** Cap applied to a server's `Retry-After`. @default 60_000 */
  maxRetryAfterMs?: number;
  /**
   * How long a keyed call keeps retrying while the server answers that the key is in progress
   * (the first execution is still running), counted from the first such answer. These retries
   * do not use up `maxAttempts`, so a slow first execution (an LLM call) is waited out, not
   * given up on. When it passes, the caller gets the last 409.
   * @default 60_000
   */
  inProgressWaitMs?: number;
  /**
   * Most attempts answered "in progress" per logical call; the last one is returned to the
   * caller. Bounds the wait when the server's `Retry-After` is tiny or the clock stands still.
   * @default 100
   */
  maxInProgressAttempts?: number;
  /**
   * Tells whether a 409 answer to a keyed call means "the first request with this key still
   * runs; retry later" (waited on) rather than the application's own conflict (returned at
   * once). It MUST return true only for the idempotency layer's answer: an application's 409
   * ("email already registered") retried with the same key would only come back again.
   * @default {@link isInProgressAnswer}: the problem type `https://idem.dev/problems/in-progress`
   */
  isInProgress?: (answer: ConflictAnswer) => boolean;
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
  /**
   * Which statuses are retried (as counted attempts). A `422` and a replayed answer are never
   * retried, whatever it says; a 409 in progress is waited on whatever it says. One that throws
   * ends the call with its error (the answer's unread body is cancelled, its connection freed).
   * @default 408, 425, 429 and 5xx
   */
  isRetryableStatus?: (status: number) => boolean;
  /** Largest one-shot stream body buffered so that it can be resent. @default 10_485_760 (10 MiB) */
  maxBufferedBodyBytes?: number;
  /**
   * Called after every attempt, one the caller's signal aborted included (`error`: the abort
   * reason, `willRetry: false`; its `key` is the one to retry the call with); an exception it
   * throws (or an async hook's rejection) is ignored.
   */
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
  /**
   * The key sent on every attempt, or `undefined` for a method that gets none. The key itself,
   * not its header form: send it again as `formatKeyHeader(key, 'sf-string')`.
   */
  key: string | undefined;
  /** Attempts it took, the first included. */
  attempts: number;
  /** The server replayed a recorded outcome (the replay marker header was `true`). */
  replayed: boolean;
}

function positive(name: string, value: number, allowZero = false): number {
  if (!(Number.isFinite(value) && (allowZero ? value >= 0 : value > 0))) {
    throw invalidRangeInput(`${name} must be a ${allowZero ? 'non-negative' : 'positive'} number`);
  }
  return value;
}

/** A duration a timer waits for: {@link positive}, and at most {@link MAX_TIMER_MS}. */
function duration(name: string, value: number, allowZero = false): number {
  positive(name, value, allowZero);
  if (value > MAX_TIMER_MS) {
    throw invalidRangeInput(
      `${name} must be at most ${MAX_TIMER_MS} ms (the longest timer Node keeps, about 24.8 days)`,
    );
  }
  return value;
}

function count(name: string, value: number): number {
  if (!(Number.isSafeInteger(value) && value >= 1)) {
    throw invalidRangeInput(`${name} must be an integer of at least 1`);
  }
  return value;
}

/** An HTTP token (RFC 9110 section 5.6.2): what a header name or a method is made of. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function shown(value: unknown): string {
  if (typeof value === 'string') return quotedInput(value);
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  const type = typeof value;
  return `${type === 'object' || type === 'undefined' ? 'an' : 'a'} ${type}`;
}

/** The option's value, or `undefined` when it was not given (`undefined` or `null`). */
function given<T>(value: T | null | undefined): T | undefined {
  return value ?? undefined;
}

function fn<F>(name: string, value: F | undefined, fallback: F): F {
  if (value === undefined) return fallback;
  if (typeof value !== 'function') {
    throw invalidRangeInput(`${name} must be a function, got ${shown(value)}`);
  }
  return value;
}

function oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalidRangeInput(
      `${name} must be ${allowed.map((a) => `'${a}'`).join(' or ')}, got ${shown(value)}`,
    );
  }
  return value as T;
}

function token(name: string, value: unknown): string {
  if (typeof value !== 'string' || !TOKEN.test(value)) {
    throw invalidRangeInput(
      `${name} must be an HTTP token (letters, digits and !#$%&'*+-.^_\`|~, no spaces), got ${shown(value)}`,
    );
  }
  return value;
}

function methodList(value: unknown): ReadonlySet<string> {
  if (!Array.isArray(value)) {
    throw invalidRangeInput(
      `methods must be an array of HTTP method names (e.g. ['POST', 'PATCH']), got ${shown(value)}`,
    );
  }
  return new Set(value.map((m: unknown, i) => token(`methods[${i}]`, m).toUpperCase()));
}

function keyStrategy(value: unknown): KeyStrategy {
  if (value === 'random' || value === 'content' || typeof value === 'function') {
    return value as KeyStrategy;
  }
  throw invalidRangeInput(`key must be 'random', 'content' or a function, got ${shown(value)}`);
}

/** The names {@link IdempotentFetchOptions} has: any other is refused (a misspelt option). */
const OPTION_NAMES: Record<keyof IdempotentFetchOptions, true> = {
  fetch: true,
  methods: true,
  key: true,
  headerName: true,
  keyFormat: true,
  resumeStreams: true,
  replayHeader: true,
  maxAttempts: true,
  initialDelayMs: true,
  maxDelayMs: true,
  minDelayMs: true,
  maxRetryAfterMs: true,
  inProgressWaitMs: true,
  maxInProgressAttempts: true,
  isInProgress: true,
  attemptTimeoutMs: true,
  deadlineMs: true,
  isRetryableStatus: true,
  maxBufferedBodyBytes: true,
  onAttempt: true,
  sleep: true,
  random: true,
  now: true,
};

/**
 * Refuses a name of `value` that is not one of `known`: a misspelt option (`maxAttempt`,
 * `resumeStreams: { maxResume: 3 }`) would otherwise take the default without a word. A name
 * set to `undefined` says nothing and passes (options spread from another object).
 */
function knownNames(prefix: string, value: object, known: Record<string, true>): void {
  const message = unknownOptionMessage(prefix, value, known, '@idem/client');
  if (message !== undefined) throw invalidRangeInput(message);
}

/**
 * Request headers the client writes or that carry the request itself: as `headerName`, the
 * key would be read from (and written over) the caller's content type, a resumed stream's
 * `Last-Event-ID` or generation, or the message framing.
 */
const MANAGED_HEADERS = new Set([
  'content-type',
  'content-length',
  'content-encoding',
  'transfer-encoding',
  'host',
  'connection',
  'last-event-id',
  GENERATION_HEADER,
  EVENT_ID_ENCODING_HEADER,
]);

function keyHeaderName(value: unknown): string {
  const name = token('headerName', value ?? 'Idempotency-Key');
  if (MANAGED_HEADERS.has(name.toLowerCase()))
    throw invalidRangeInput(
      `headerName must not be ${name}: the client sets or reads that header itself`,
    );
  return name;
}

function maxResumesOf(value: unknown): number {
  if (value === false) return 0;
  // `true` was taken for the default before options were checked: still is.
  if (value === undefined || value === true) return 5;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidRangeInput(
      `resumeStreams must be false, true or { maxResumes?: number }, got ${shown(value)}`,
    );
  }
  knownNames('resumeStreams.', value, { maxResumes: true });
  const { maxResumes } = value as { maxResumes?: number | null };
  return count('resumeStreams.maxResumes', maxResumes ?? 5);
}

/** Options with their defaults applied and checked. */
export interface ResolvedFetchOptions {
  baseFetch: FetchFunction;
  /** No `fetch` was given: the global fetch sends, so its input rules are known. */
  globalFetch: boolean;
  methods: ReadonlySet<string>;
  strategy: KeyStrategy;
  headerName: string;
  keyFormat: 'sf-string' | 'bare';
  replayHeader: string;
  maxAttempts: number;
  delays: DelaySettings;
  inProgressWaitMs: number;
  maxInProgressAttempts: number;
  isInProgress: (answer: ConflictAnswer) => boolean;
  /** `Infinity` when there is none. */
  attemptTimeoutMs: number;
  deadlineMs: number | undefined;
  retryableStatus: (status: number) => boolean;
  maxBuffered: number;
  /** 0 when streams are not resumed. */
  maxResumes: number;
  /** Called after every attempt, if given. */
  onAttempt: ((event: AttemptEvent) => void) | undefined;
  sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  now: () => number;
}

/**
 * Applies defaults; throws `InvalidInputError` (`INVALID_INPUT`, also a `RangeError`) on a bad value: a number out of range, a `key` or
 * `keyFormat` outside its values, a header name or method that is not an HTTP token, `methods`
 * that is not an array, a hook or injected function that is not a function. An option given as
 * `undefined` (or `null`) takes its default.
 */
export function resolveFetchOptions(options: IdempotentFetchOptions): ResolvedFetchOptions {
  if (typeof options !== 'object' || options === null) {
    throw invalidRangeInput(`options must be an object, got ${shown(options)}`);
  }
  knownNames('', options, OPTION_NAMES);
  const fetchOption = given(options.fetch);
  const baseFetch: FetchFunction = fn<FetchFunction>('fetch', fetchOption, (input, init) =>
    globalThis.fetch(input, init),
  );
  const methods = methodList(given(options.methods) ?? ['POST', 'PATCH']);
  const strategy = keyStrategy(given(options.key) ?? 'random');
  const headerName = keyHeaderName(given(options.headerName));
  const keyFormat = oneOf('keyFormat', given(options.keyFormat) ?? 'sf-string', [
    'sf-string',
    'bare',
  ] as const);
  const replayHeader = token('replayHeader', given(options.replayHeader) ?? 'Idempotent-Replayed');
  const maxAttempts = count('maxAttempts', options.maxAttempts ?? 5);
  const delays: DelaySettings = {
    initialDelayMs: duration('initialDelayMs', options.initialDelayMs ?? 250, true),
    maxDelayMs: duration('maxDelayMs', options.maxDelayMs ?? 10_000, true),
    minDelayMs: duration('minDelayMs', options.minDelayMs ?? 100, true),
    maxRetryAfterMs: duration('maxRetryAfterMs', options.maxRetryAfterMs ?? 60_000, true),
    random: fn('random', given(options.random), Math.random),
  };
  const inProgressWaitMs = duration('inProgressWaitMs', options.inProgressWaitMs ?? 60_000, true);
  const maxInProgressAttempts = count(
    'maxInProgressAttempts',
    options.maxInProgressAttempts ?? 100,
  );
  const isInProgress = fn('isInProgress', given(options.isInProgress), isInProgressAnswer);
  // `null` is "not given" here too, as for every other option (a JSON config's empty field).
  const attemptTimeoutOption = given(options.attemptTimeoutMs);
  const attemptTimeoutMs =
    attemptTimeoutOption === undefined
      ? Number.POSITIVE_INFINITY
      : duration('attemptTimeoutMs', attemptTimeoutOption);
  const deadlineOption = given(options.deadlineMs);
  const deadlineMs =
    deadlineOption === undefined ? undefined : duration('deadlineMs', deadlineOption);
  const retryableStatus = fn(
    'isRetryableStatus',
    given(options.isRetryableStatus),
    isRetryableStatus,
  );
  const maxBuffered = positive(
    'maxBufferedBodyBytes',
    options.maxBufferedBodyBytes ?? 10 * 1024 * 1024,
    true,
  );
  const maxResumes = maxResumesOf(given(options.resumeStreams));
  const sleep = fn('sleep', given(options.sleep), abortableSleep);
  const now = fn('now', given(options.now), Date.now);
  const onAttempt = fn<((event: AttemptEvent) => void) | undefined>(
    'onAttempt',
    given(options.onAttempt),
    undefined,
  );
  return {
    baseFetch,
    globalFetch: fetchOption === undefined,
    methods,
    strategy,
    headerName,
    keyFormat,
    replayHeader,
    maxAttempts,
    delays,
    inProgressWaitMs,
    maxInProgressAttempts,
    isInProgress,
    attemptTimeoutMs,
    deadlineMs,
    retryableStatus,
    maxBuffered,
    maxResumes,
    onAttempt,
    sleep,
    now,
  };
}
