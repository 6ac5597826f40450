import {
  checkOutcomePolicy,
  InvalidInputError,
  unknownOptionMessage,
  type WaitOptions,
} from '@idem/core';
import type { LiveStreamOptions } from './live-options.js';
import type { FingerprintOptions, HttpIdempotencyOptions } from './options.js';

// RFC 9110 5.6.2 token: the form of a header field name and of a method.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

function isToken(value: unknown): value is string {
  return typeof value === 'string' && TOKEN.test(value);
}

function optionalBoolean(name: string, value: unknown): void {
  if (value !== undefined && typeof value !== 'boolean')
    throw new InvalidInputError(`${name} must be true or false`);
}

function optionalFunction(name: string, value: unknown): void {
  if (value !== undefined && typeof value !== 'function')
    throw new InvalidInputError(`${name} must be a function`);
}

function headerNames(name: string, value: unknown): void {
  if (value === undefined) return;
  if (!(Array.isArray(value) && value.every(isToken)))
    throw new InvalidInputError(`${name} must be a list of header names`);
}

/**
 * `Retry-After` seconds: a finite, non-negative number (rounded up, at least 1).
 * @internal
 */
export function retryAfterSeconds(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (!(typeof value === 'number' && Number.isFinite(value) && value >= 0))
    throw new InvalidInputError(`${name} must be a finite, non-negative number of seconds`);
  return Math.max(1, Math.ceil(value));
}

// The option names, each list typed against its interface: an option added to (or taken
// from) a type without its name here fails the build.
const OPTION_NAMES: Record<keyof HttpIdempotencyOptions<unknown>, true> = {
  store: true,
  leaseMs: true,
  heartbeatMs: true,
  maxHoldMs: true,
  retentionMs: true,
  storeTimeoutMs: true,
  completionWaitMs: true,
  maxOutcomeBytes: true,
  wait: true,
  clock: true,
  onEvent: true,
  outcomeCodec: true,
  methods: true,
  required: true,
  headerName: true,
  scope: true,
  fingerprint: true,
  isFinal: true,
  recordedHeaders: true,
  maxBodyBytes: true,
  failOpen: true,
  inProgressRetryAfterSeconds: true,
  unavailableRetryAfterSeconds: true,
  onWarning: true,
  liveStreams: true,
};
const FINGERPRINT_NAMES: Record<keyof FingerprintOptions<unknown>, true> = {
  headers: true,
  exclude: true,
  query: true,
  extras: true,
  defaultCharset: true,
};
const LIVE_STREAM_NAMES: Record<keyof LiveStreamOptions, true> = {
  channel: true,
  mediaTypes: true,
  maxReaders: true,
  stallMs: true,
  blockMs: true,
  anchorWaitMs: true,
};
const WAIT_NAMES: Record<keyof WaitOptions, true> = { timeoutMs: true, pollMs: true };

/**
 * Refuses a name of `value` (an options object) that is not one of `known`: a misspelt
 * option (`retention`, `fingerprint.querry`) would otherwise be ignored without a word. A
 * name set to `undefined` says nothing and passes (an options object spread from another).
 */
function knownNames(prefix: string, value: object, known: Record<string, true>): void {
  const message = unknownOptionMessage(prefix, value, known, '@idem/http');
  if (message !== undefined) throw new InvalidInputError(message);
}

/**
 * Checks the HTTP options that core does not: each would otherwise fail (or silently
 * misbehave) on every request rather than at creation. An option name it does not know (at
 * the top level, in `fingerprint`, `liveStreams` or `wait`) is refused: an adapter takes its
 * own options (`@idem/fastify`'s `bodyTimeoutMs`) out before it hands the rest here.
 * @throws InvalidInputError naming the option
 * @internal
 */
export function checkHttpOptions<R>(options: HttpIdempotencyOptions<R>): void {
  if (typeof options !== 'object' || options === null)
    throw new InvalidInputError('the options must be an object');
  knownNames('', options, OPTION_NAMES);
  const { methods, headerName, fingerprint, liveStreams, wait } = options;
  if (methods !== undefined && !(Array.isArray(methods) && methods.every(isToken)))
    throw new InvalidInputError('methods must be a list of HTTP method names');
  // An empty list protects nothing: every request would pass through, a keyless POST run.
  if (methods !== undefined && methods.length === 0)
    throw new InvalidInputError(
      'methods must name at least one HTTP method (an empty list protects no request; leave the middleware out instead)',
    );
  if (typeof liveStreams === 'object' && liveStreams !== null)
    knownNames('liveStreams.', liveStreams, LIVE_STREAM_NAMES);
  if (typeof wait === 'object' && wait !== null) knownNames('wait.', wait, WAIT_NAMES);
  if (headerName !== undefined && !isToken(headerName))
    throw new InvalidInputError('headerName must be a header field name');
  optionalBoolean('required', options.required);
  optionalBoolean('failOpen', options.failOpen);
  optionalFunction('isFinal', options.isFinal);
  // An async one answers a Promise, which says nothing of the response.
  checkOutcomePolicy(options.isFinal);
  optionalFunction('onWarning', options.onWarning);
  headerNames('recordedHeaders', options.recordedHeaders);
  if (fingerprint === undefined) return;
  if (typeof fingerprint !== 'object' || fingerprint === null)
    throw new InvalidInputError('fingerprint must be an object');
  knownNames('fingerprint.', fingerprint, FINGERPRINT_NAMES);
  headerNames('fingerprint.headers', fingerprint.headers);
  const { exclude } = fingerprint;
  if (
    exclude !== undefined &&
    !(
      Array.isArray(exclude) &&
      exclude.every((path) => typeof path === 'string' && path.split('.').every(Boolean))
    )
  )
    throw new InvalidInputError(
      'fingerprint.exclude must be a list of field names or dotted paths',
    );
  optionalBoolean('fingerprint.query', fingerprint.query);
  optionalFunction('fingerprint.extras', fingerprint.extras);
  const { defaultCharset } = fingerprint;
  if (defaultCharset !== undefined && !isToken(defaultCharset))
    throw new InvalidInputError('fingerprint.defaultCharset must be a charset name (a token)');
}
