import {
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
  /** What keys are unique within. @default the queue or stream name */
  scope?: Scope;
  /**
   * Delay before a failed message or a duplicate in progress is delivered again (a duplicate
   * in progress waits at most until the holder's lease passes). @default 1_000
   */
  retryDelayMs?: number;
  /** Told what happened to each message. Errors it throws are ignored. */
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
  const engine = createIdempotency<T>(engineOptions);
  const report = (r: MessageReport<TMessage>) => {
    try {
      onMessage?.(r);
    } catch {
      // A broken listener must not change what the broker is told.
    }
  };
  async function process(message: TMessage): Promise<Disposition> {
    let disposition: Disposition;
    try {
      disposition = await decide(message);
    } catch (error) {
      disposition = { action: 'reject', status: 'rejected', error };
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
    try {
      const result = await engine.execute(request, (ctx) => handler(message, ctx));
      return { action: 'ack', status: result.replayed ? 'replayed' : 'processed' };
    } catch (error) {
      return classify(error, retryDelayMs);
    }
  }
  return { process, engine: engine as Idempotency<unknown> };
}

/** What an error of `execute` means for the message. */
function classify(error: unknown, retryDelayMs: number): Disposition {
  // A recorded failure (under a policy that records failures) is an outcome like any other.
  if (error instanceof ReplayedFailureError) return { action: 'ack', status: 'replayed' };
  // The handler ran once and its outcome could not be stored: a marker stands for it, and
  // running the handler again is what must never happen.
  if (isIdemError(error) && ['OUTCOME_TOO_LARGE', 'OUTCOME_NOT_RECORDED'].includes(error.code))
    return { action: 'ack', status: 'processed' };
  if (error instanceof InProgressError) {
    const delayMs = Math.max(10, Math.min(error.retryAfterMs, retryDelayMs));
    return { action: 'retry', status: 'in_progress', delayMs, error };
  }
  if (isIdemError(error) && ['MISMATCH', 'INVALID_KEY', 'NOT_CANONICAL'].includes(error.code))
    return { action: 'reject', status: 'rejected', error };
  // The handler's own error (key released), a lost lease, a store outage, an outcome whose
  // write has not landed yet: never acked; the redelivery replays or runs again.
  return { action: 'retry', status: 'failed', delayMs: retryDelayMs, error };
}
