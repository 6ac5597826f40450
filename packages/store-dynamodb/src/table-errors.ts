/**
 * Which failures of ensureTable()'s requests are worth sending again (transient), and which
 * of those may have been applied by DynamoDB before the answer was lost.
 */

/** Exception names that say "try again later" whatever their HTTP status. */
const THROTTLED = new Set([
  'ThrottlingException',
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
  'LimitExceededException',
  'TooManyRequestsException',
  'RequestTimeout',
  'RequestTimeoutException',
]);
/** Node's codes of a connection that was never made (or a name that did not resolve): unsent. */
const UNSENT_CODES = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
/** Node's codes of a connection that failed or went away: those, and a connection lost. */
const NETWORK_CODES = new Set([
  ...UNSENT_CODES,
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
]);

/**
 * The Node code of a failed connection: on the error, or on the cause of a fetch handler's
 * `TypeError: fetch failed` (only there: a refusal that merely mentions one stays a refusal).
 */
function networkCode(error: { name?: unknown; code?: unknown; cause?: unknown }) {
  for (const e of error.name === 'TypeError' ? [error, error.cause] : [error]) {
    const code = typeof e === 'object' && e !== null ? (e as { code?: unknown }).code : undefined;
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return code;
  }
  return undefined;
}

/** Throttling: a throttling exception, or a 429 (from DynamoDB or a proxy on the way). */
function isThrottled(error: { name?: unknown; $metadata?: { httpStatusCode?: unknown } }) {
  return (
    (typeof error.name === 'string' && THROTTLED.has(error.name)) ||
    error.$metadata?.httpStatusCode === 429
  );
}

/**
 * True when a request of ensureTable() may succeed if sent again: no answer in time, a
 * connection that failed, throttling, a server-side fault. False for an answer that refuses
 * the request itself (validation, access, credentials: DynamoDB's client faults) and for
 * anything that is not a request failure.
 */
export function isTransientTableError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const e = error as {
    name?: unknown;
    code?: unknown;
    cause?: unknown;
    $fault?: unknown;
    $retryable?: unknown;
    $metadata?: { httpStatusCode?: unknown };
  };
  if (isThrottled(e)) return true;
  if (e.$retryable) return true;
  const status = e.$metadata?.httpStatusCode;
  if (typeof status === 'number' && status >= 500) return true;
  if (e.$fault === 'server') return true;
  if (e.$fault === 'client') return false;
  // No answer: the store's deadline (AbortSignal.timeout), the client's own timeouts, or a
  // socket that failed.
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return true;
  return networkCode(e) !== undefined;
}

/**
 * True when a transient failure may have come after DynamoDB applied the request: no
 * answer, a connection lost on the way, a 5xx. Not for throttling (DynamoDB refused it) nor
 * a connection never made.
 */
export function mayHaveApplied(error: unknown): boolean {
  if (!isTransientTableError(error)) return false;
  const e = error as { name?: unknown; code?: unknown; $metadata?: { httpStatusCode?: unknown } };
  if (isThrottled(e)) return false;
  const code = networkCode(e);
  return !(code !== undefined && UNSENT_CODES.has(code));
}

/**
 * The failure of a request that got no answer within `ms` (0: not sent, no time was left):
 * transient, like the SDK's own timeouts.
 */
export function noAnswer(ms: number): Error {
  const message = ms > 0 ? `no answer within ${ms} ms` : 'not sent: no time left';
  return Object.assign(new Error(message), { name: 'TimeoutError' });
}
