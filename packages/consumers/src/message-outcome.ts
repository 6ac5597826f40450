import {
  canonicalJson,
  createIdempotency,
  deriveKey,
  fingerprint,
  type Idempotency,
  type IdempotencyOptions,
  InProgressError,
  InvalidInputError,
  isIdemError,
  isValidKey,
  type JsonValue,
  LeaseLostError,
  type OperationContext,
  ReplayedFailureError,
  type Scope,
} from '@idem/core';

/**
 * Engine options: those of `createIdempotency` in `@idem/core` (store, leaseMs, retentionMs,
 * heartbeatMs, storeTimeoutMs, isFinal, serializer, onEvent...) except `wait`: a duplicate in
 * progress goes back to the broker for a later delivery instead of holding a consumer slot.
 */
export type ConsumerEngineOptions<T> = Omit<IdempotencyOptions<T>, 'wait'>;

/**
 * What became of one message:
 * - `processed`: the handler ran, its outcome was recorded, the message acked;
 * - `replayed`: a redelivery of a message whose outcome was recorded: acked, handler not run;
 * - `in_progress`: another consumer holds the key: given back for a later delivery;
 * - `failed`: the handler threw (the key was released) or the store failed: given back;
 * - `rejected`: the message cannot be processed as it is (no key, invalid key, another
 *   payload under a recorded key): rejected without requeue (dead-lettered if configured).
 */
export type MessageStatus = 'processed' | 'replayed' | 'in_progress' | 'failed' | 'rejected';

/** What to do with the message at the broker. */
export type Disposition =
  | { action: 'ack'; status: 'processed' | 'replayed' }
  | { action: 'retry'; status: 'in_progress' | 'failed'; delayMs: number; error: unknown }
  | { action: 'reject'; status: 'rejected'; error: unknown };

/** A message's fate, for `onMessage`. */
export interface MessageReport<TMessage> {
  message: TMessage;
  status: MessageStatus;
  error?: unknown;
}

/** Options every consumer helper shares. */
export interface ConsumerOptions<TMessage, T> extends ConsumerEngineOptions<T> {
  /** The message handler; its return value is the recorded outcome. */
  handler: (message: TMessage, idempotency: OperationContext) => Promise<T>;
  /**
   * The idempotency key of a message: a key string (1..255 printable ASCII) as it is, any
   * other JSON value hashed (`deriveKey`). MUST be the same on every delivery.
   */
  key?: (message: TMessage) => JsonValue | undefined;
  /**
   * What is fingerprinted (another payload under a recorded key is rejected), or `false`.
   * @default the message body, byte for byte
   */
  payload?: ((message: TMessage) => JsonValue | Uint8Array) | false;
  /**
   * What keys are unique within: canonical JSON (else `InvalidInputError` at creation).
   * @default `['amqp', queue]` / `['nats', stream, durable or named consumer]` (required for an ordered
   * or ephemeral consumer, whose name changes at every start)
   */
  scope?: Scope;
  /**
   * Delay before a failed message is delivered again. A duplicate in progress elsewhere is
   * given back after the holder's lease has passed, plus jitter (at most
   * `max(leaseMs, retryDelayMs)` plus the jitter), so that a crashed holder costs it one
   * delivery. @default 1_000
   */
  retryDelayMs?: number;
  /**
   * Told what happened to each message. Errors it throws, and the rejection of a promise it
   * returns, are ignored.
   */
  onMessage?: (report: MessageReport<TMessage>) => void;
}

/** The key, the fingerprint and the state machine of a consumer, bound once. */
export interface MessageProcessor<TMessage> {
  /** Runs the handler at most once for the message's key; says what to tell the broker. */
  process(message: TMessage): Promise<Disposition>;
  readonly engine: Idempotency<unknown>;
}

const toKey = (value: JsonValue | undefined): string | undefined =>
  value === undefined || value === null || value === ''
    ? undefined
    : typeof value === 'string' && isValidKey(value)
      ? value
      : deriveKey(value);

/** Builds the processor; `defaultKey`, `body` and `defaultScope` come from the broker helper. */
export function messageProcessor<TMessage, T>(
  options: ConsumerOptions<TMessage, T>,
  broker: {
    defaultKey: (message: TMessage) => JsonValue | undefined;
    body: (message: TMessage) => Uint8Array;
    defaultScope: (message: TMessage) => Scope;
  },
): MessageProcessor<TMessage> {
  const {
    handler,
    key,
    payload,
    scope,
    retryDelayMs = 1_000,
    onMessage,
    ...engineOptions
  } = options;
  if (typeof handler !== 'function') throw new InvalidInputError('handler must be a function');
  // A field name where a function belongs (`key: 'orderId'`, from JS or a JSON config) would
  // reject, and drop, every message: refused here instead.
  if (key !== undefined && typeof key !== 'function')
    throw new InvalidInputError('key must be a function of the message');
  if (payload !== undefined && payload !== false && typeof payload !== 'function')
    throw new InvalidInputError('payload must be a function of the message, or false');
  if (onMessage !== undefined && typeof onMessage !== 'function')
    throw new InvalidInputError('onMessage must be a function');
  // A scope canonical JSON refuses (NaN, a Map...) would reject, and drop, every message.
  if (scope !== undefined) {
    try {
      canonicalJson(scope);
    } catch (cause) {
      throw new InvalidInputError(
        `scope must be canonical JSON: ${cause instanceof Error ? cause.message : String(cause)}`,
      );
    }
  }
  if (
    !(
      typeof retryDelayMs === 'number' &&
      Number.isFinite(retryDelayMs) &&
      retryDelayMs >= 0 &&
      retryDelayMs <= MAX_TIMER_MS
    )
  )
    throw new InvalidInputError(
      `retryDelayMs must be a non-negative number of ms, at most ${MAX_TIMER_MS} (the longest timer Node keeps, about 24.8 days: a longer one fires at once)`,
    );
  const engine = createIdempotency<T>(engineOptions);
  const report = (r: MessageReport<TMessage>) => {
    try {
      // An async listener (assignable to `(report) => void`) may reject: that rejection must
      // not become an unhandled rejection, which kills the process.
      const returned: unknown = onMessage?.(r);
      if (
        returned !== null &&
        (typeof returned === 'object' || typeof returned === 'function') &&
        'then' in returned
      )
        Promise.resolve(returned).then(undefined, () => {});
    } catch {
      // A broken listener must not change what the broker is told.
    }
  };
  const { maxHoldMs } = engine.settings;
  async function process(message: TMessage): Promise<Disposition> {
    let disposition: Disposition;
    let timer: ReturnType<typeof setTimeout> | undefined;
    // A handler still running when its hold ends has no lease left (heartbeats stop there):
    // the message goes back to the broker rather than keep its slot (and JetStream's
    // `working()`) forever; the late handler's writes are owner-checked, its fence stale.
    const holdPassed = new Promise<Disposition>((resolve) => {
      timer = setTimeout(
        () =>
          resolve({
            action: 'retry',
            status: 'failed',
            delayMs: retryDelayMs,
            error: new LeaseLostError(
              `The handler ran past maxHoldMs (${maxHoldMs} ms): the message is given back`,
            ),
          }),
        Math.min(maxHoldMs, MAX_TIMER_MS),
      );
    });
    try {
      disposition = await Promise.race([decide(message), holdPassed]);
    } catch (error) {
      disposition = { action: 'reject', status: 'rejected', error };
    } finally {
      clearTimeout(timer);
    }
    report({
      message,
      status: disposition.status,
      error: disposition.action === 'ack' ? undefined : disposition.error,
    });
    return disposition;
  }
  async function decide(message: TMessage): Promise<Disposition> {
    const messageKey = toKey((key ?? broker.defaultKey)(message));
    if (messageKey === undefined)
      return {
        action: 'reject',
        status: 'rejected',
        error: new TypeError('The message has no key'),
      };
    const part = payload === false ? undefined : (payload ?? broker.body)(message);
    const request = {
      key: messageKey,
      scope: scope ?? broker.defaultScope(message),
      fingerprint: part === undefined ? '' : fingerprint({ body: part }),
    };
    // What the handler itself threw is never taken for the engine's verdict on the message
    // (a handler may throw an idem error of its own, e.g. from a nested call): it is retried.
    let thrownByHandler = false;
    let ranHere = false;
    try {
      const result = await engine.execute(request, async (ctx) => {
        ranHere = true;
        try {
          return await handler(message, ctx);
        } catch (error) {
          thrownByHandler = true;
          throw error;
        }
      });
      return { action: 'ack', status: result.replayed ? 'replayed' : 'processed' };
    } catch (error) {
      if (thrownByHandler)
        return { action: 'retry', status: 'failed', delayMs: retryDelayMs, error };
      return classify(error, retryDelayMs, engine.settings.leaseMs, ranHere);
    }
  }
  return { process, engine: engine as Idempotency<unknown> };
}

/** Node's longest timer (a longer one fires at once). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * When to deliver again a duplicate whose key is in progress elsewhere: once the holder's
 * lease has passed (`retryAfterMs`), plus jitter so that duplicates do not come back
 * together. Every give-back uses up a delivery (JetStream `max_deliver`, a quorum queue's
 * `delivery-limit`): coming back every `retryDelayMs` made a crashed holder's unrenewed
 * lease burn them all and the broker drop the message. A live holder renews its lease, so
 * its duplicate comes back about once a lease until the outcome is recorded (then replays).
 * Bounded by the longer of `leaseMs` and `retryDelayMs` (a holder with a longer lease is
 * asked about again then), plus the jitter.
 */
export function inProgressDelayMs(
  retryAfterMs: number,
  retryDelayMs: number,
  leaseMs: number,
  random: () => number = Math.random,
): number {
  // NaN (an unreadable lease deadline): as if the holder's lease were whole.
  const after = Number.isNaN(retryAfterMs) ? leaseMs : retryAfterMs;
  const base = Math.max(
    10,
    Math.min(after, Math.max(leaseMs, retryDelayMs), MAX_IN_PROGRESS_DELAY_MS),
  );
  const jitter = Math.floor(random() * Math.min(1_000, 10 + base / 10));
  return Math.min(base + jitter, MAX_TIMER_MS);
}

/**
 * The longest a duplicate in progress is held before it is given back: RabbitMQ closes a
 * channel whose delivery stays unacked past its `consumer_timeout` (30 min by default), so a
 * long lease must not keep it that long. A holder still in progress then is asked about again.
 */
const MAX_IN_PROGRESS_DELAY_MS = 10 * 60_000;

/** What an error of `execute` means for the message. */
function classify(
  error: unknown,
  retryDelayMs: number,
  leaseMs: number,
  ranHere: boolean,
): Disposition {
  // A recorded failure (under a policy that records failures) is an outcome like any other.
  if (error instanceof ReplayedFailureError) return { action: 'ack', status: 'replayed' };
  // The handler ran once and its outcome could not be stored: a marker stands for it, and
  // running the handler again is what must never happen. `processed` for the delivery that
  // ran it; a duplicate answered by the marker did not run it: `replayed`.
  if (isIdemError(error) && ['OUTCOME_TOO_LARGE', 'OUTCOME_NOT_RECORDED'].includes(error.code))
    return { action: 'ack', status: ranHere ? 'processed' : 'replayed' };
  if (error instanceof InProgressError) {
    const delayMs = inProgressDelayMs(error.retryAfterMs, retryDelayMs, leaseMs);
    return { action: 'retry', status: 'in_progress', delayMs, error };
  }
  if (isIdemError(error) && ['MISMATCH', 'INVALID_KEY', 'NOT_CANONICAL'].includes(error.code))
    return { action: 'reject', status: 'rejected', error };
  // The handler's own error (key released), a lost lease, a store outage, an outcome whose
  // write has not landed yet: never acked; the redelivery replays or runs again.
  return { action: 'retry', status: 'failed', delayMs: retryDelayMs, error };
}
