import {
  canonicalJson,
  checkOutcomePolicy,
  createIdempotency,
  deriveKey,
  fingerprint,
  type Idempotency,
  type IdempotencyOptions,
  InvalidInputError,
  isIdemError,
  isValidKey,
  type JsonValue,
  LeaseLostError,
  markerFailureOf,
  type OperationContext,
  type Scope,
} from '@idem/core';
import { classify, MAX_TIMER_MS, NOT_STORED } from './engine-verdicts.js';
import {
  answerBoundMs,
  HandlerGates,
  HandlerNotStartedError,
  type MessageGate,
  settleWithin,
} from './handler-gate.js';
import { callListener } from './listener-call.js';
import { OutcomeNotKeptError, type PolicyVerdict, trackedPolicy } from './outcome-policy.js';
import { type Attempt, acrossStoreOutage, type OutageBounds } from './store-outage.js';

/**
 * Engine options: those of `createIdempotency` in `@idem/core` (store, leaseMs, retentionMs,
 * heartbeatMs, storeTimeoutMs, isFinal, serializer, onEvent...) except `wait`: a duplicate in
 * progress goes back to the broker for a later delivery instead of holding a consumer slot.
 */
export type ConsumerEngineOptions<T> = Omit<IdempotencyOptions<T>, 'wait'>;

/**
 * What became of one message:
 * - `processed`: the handler ran, its outcome was recorded, the message acked (with `error`:
 *   the handler threw and the policy, e.g. `everythingFinal`, recorded that failure; or the
 *   policy threw of a success, which is kept: running the handler again must never happen);
 * - `replayed`: a redelivery of a message whose outcome was recorded: acked, handler not run;
 * - `in_progress`: another consumer holds the key: given back for a later delivery;
 * - `failed`: the handler threw (the key was released), the policy did not keep a success
 *   (`OutcomeNotKeptError`), or the store failed: given back;
 * - `rejected`: the message cannot be processed as it is (no key, invalid key, another
 *   payload under a recorded key): rejected without requeue (dead-lettered if configured).
 */
export type MessageStatus = 'processed' | 'replayed' | 'in_progress' | 'failed' | 'rejected';

/** What to do with the message at the broker. */
export type Disposition =
  | { action: 'ack'; status: 'processed' | 'replayed'; error?: unknown }
  | {
      action: 'retry';
      status: 'in_progress' | 'failed';
      delayMs: number;
      error: unknown;
      /**
       * `in_progress` only, when the holder is a run of this same processor (a RabbitMQ
       * redelivery after a reconnect, while the first copy's handler still runs on the lost
       * channel; a JetStream redelivery at `ack_wait` or a publisher's resend while the first
       * runs): settles with that run's disposition once it ended (its outcome recorded or
       * not). A consumer that holds the message can ask the store again then, rather than
       * wait out the holder's whole lease (test/amqp32b-local-holder.test.ts,
       * test/consumers33-js-local-run.test.ts).
       */
      localRun?: Promise<Disposition>;
    }
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
   * other JSON value hashed (`deriveKey`). MUST be the same on every delivery. A promise (an
   * async function) is awaited; its rejection rejects the message, as a throw does.
   */
  key?: (message: TMessage) => JsonValue | undefined | PromiseLike<JsonValue | undefined>;
  /**
   * What is fingerprinted (another payload under a recorded key is rejected), or `false`. A
   * promise (an async function) is awaited.
   * @default the message body, byte for byte
   */
  payload?:
    | ((message: TMessage) => JsonValue | Uint8Array | PromiseLike<JsonValue | Uint8Array>)
    | false;
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

/** How long `process` may keep a message while the store is out (see `process`). */
export interface ProcessBounds {
  /** `performance.now()` past which a message the store could not take is given back. */
  untilMs?: number;
  /**
   * Aborted when the consumer stops: a message waiting for the store, or whose key or payload
   * function is still pending then (nothing sent to the store yet), is given back at once
   * (`HandlerNotStartedError`; its handler never starts).
   */
  signal?: AbortSignal;
  /**
   * `false`: `onMessage` is not told of this disposition; the caller tells it (`report`) once
   * the delivery's fate is known. A broker helper that holds a duplicate of a local run and
   * asks the store again when that run ends tells one report per delivery, the last one
   * (before, `in_progress` and then `replayed` were both told for one delivery).
   * @default true
   */
  report?: boolean;
}

/** The key, the fingerprint and the state machine of a consumer, bound once. */
export interface MessageProcessor<TMessage> {
  /**
   * Runs the handler at most once for the message's key; says what to tell the broker. A
   * message the store cannot take (an outage, before its handler ran) is tried again here,
   * every `retryDelayMs`, until the store answers, `max(leaseMs, retryDelayMs)` (or
   * `bounds.untilMs`) passes or `bounds.signal` aborts: giving it back at once would spend a
   * delivery of the broker's bound each time, for a redelivery that meets the same outage.
   * Given back at `maxHoldMs` before its handler started, the handler never starts; an
   * acquisition still unanswered then is waited for (at most `2 × storeTimeoutMs` + 1 s) and
   * the key it grants released before the disposition is answered.
   */
  process(message: TMessage, bounds?: ProcessBounds): Promise<Disposition>;
  /** Tells `onMessage` the disposition of a delivery processed with `report: false`. */
  report(message: TMessage, disposition: Disposition): void;
  /**
   * From now on no handler starts (a broker helper calls it once its `stop()`'s `timeoutMs`
   * has passed, then waits for `idle()` at most `storeTimeoutMs` more): a message whose key
   * the store grants later is released (owner-checked) and given back (`failed`,
   * `HandlerNotStartedError`), never handed to its handler; a message still waiting for its
   * key or payload function, or waiting for the store to come back, or one processed after it,
   * is given back at once.
   */
  close(): void;
  /**
   * Settles once every acquisition sent (as of the call) whose handler has not started has
   * settled, those of messages already given back at their `maxHoldMs` included: one the
   * store answers late is then released, its handler never started. Each is bounded by the
   * engine's `storeTimeoutMs` (the acquire's, then the release's); wait for it before closing
   * the store's connection.
   */
  idle(): Promise<void>;
  /**
   * The processor's own engine (one per processor: nothing else shares it). At shutdown,
   * `engine.drain(ms, { finalWritesOnly: true })` waits for the final writes it still retries
   * in the background (a handler that ran while the store failed its write), not for its
   * give-backs (a release that only spares a redelivery the wait for a lease); call it once
   * the `process()` calls have settled, as the broker helpers' stop() does: a handler still
   * running has no write pending yet, and a drain asked before its end does not wait for it.
   */
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
    scope: scopeOption,
    retryDelayMs = 1_000,
    onMessage,
    isFinal,
    ...engineOptions
  } = options;
  // `null` is "not given", as `undefined` (a config field left empty): the default scope, and
  // the helpers' checks of it (queue '', an ordered consumer), apply.
  const scope = scopeOption ?? undefined;
  if (typeof handler !== 'function') throw new InvalidInputError('handler must be a function');
  // A field name where a function belongs (`key: 'orderId'`, from JS or a JSON config) would
  // reject, and drop, every message: refused here instead.
  if (key !== undefined && typeof key !== 'function')
    throw new InvalidInputError('key must be a function of the message');
  if (payload !== undefined && payload !== false && typeof payload !== 'function')
    throw new InvalidInputError('payload must be a function of the message, or false');
  if (onMessage !== undefined && typeof onMessage !== 'function')
    throw new InvalidInputError('onMessage must be a function');
  // The engine gets a wrapper of it (see trackedPolicy): checked here, before any message.
  checkOutcomePolicy(isFinal);
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
  // The policy's verdict per message: `execute` answers alike for a success recorded and one
  // released, and throws the handler's error whether it was recorded or the key released.
  const policy = trackedPolicy<T>(isFinal);
  const engine = createIdempotency<T>({ ...engineOptions, isFinal: policy.isFinal });
  const report = (r: MessageReport<TMessage>) => callListener(onMessage, r);
  const { maxHoldMs } = engine.settings;
  const gates = new HandlerGates();
  // The runs of this processor whose handler started and has not ended, by scope and key:
  // a duplicate of one (told `in_progress`) is told when it ends (see Disposition.localRun).
  const localRuns = new Map<string, Promise<Disposition>>();
  // A message in its store-outage wait is given back at close() too (see acrossStoreOutage).
  const onGatesClose = (wake: () => void) => gates.onClose(wake);
  async function process(message: TMessage, bounds: ProcessBounds = {}): Promise<Disposition> {
    // A message the store cannot take waits for it here about a lease at most (as long as a
    // crashed holder's duplicate is held), then goes back: an instance cut off from the store
    // alone must not keep its messages from the others for long.
    const now = performance.now();
    const untilMs = Math.min(
      bounds.untilMs ?? Number.POSITIVE_INFINITY,
      now + maxHoldMs,
      now + Math.max(engine.settings.leaseMs, retryDelayMs),
    );
    let disposition: Disposition;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const gate = gates.open();
    let givenBack = false;
    // A handler still running when its hold ends has no lease left (heartbeats stop there):
    // the message goes back to the broker rather than keep its slot (and JetStream's
    // `working()`) forever; the late handler's writes are owner-checked, its fence stale. A
    // handler that has not started by then never starts (see HandlerGates): the store may
    // still grant the key (an answer later than the hold, within `storeTimeoutMs`), and the
    // handler would run beside the redelivery, after the consumer's stop() maybe.
    const holdPassed = new Promise<Disposition>((resolve) => {
      timer = setTimeout(
        () => {
          givenBack = true;
          gate.giveBack();
          resolve({
            action: 'retry',
            status: 'failed',
            delayMs: retryDelayMs,
            error: new LeaseLostError(
              gate.hasStarted
                ? `The handler ran past maxHoldMs (${maxHoldMs} ms): the message is given back`
                : `The handler had not started when maxHoldMs (${maxHoldMs} ms) passed (its key, payload or acquisition still awaited): the message is given back and the handler will not start`,
            ),
          });
        },
        Math.min(maxHoldMs, MAX_TIMER_MS),
      );
      // The broker's connection keeps the process alive while the message can be given back;
      // once the application closed it after stop() (a handler still running that has nothing
      // of its own to wait for), this timer kept the process up to `maxHoldMs` (an hour) for a
      // give-back that can no longer be sent (test/rev33a-exit.test.ts).
      timer.unref?.();
    });
    // The consumer stops: a message that has not reached the store (its key or payload
    // function still pending: a lookup that may never settle) is given back at once rather
    // than hold stop() up to its `maxHoldMs`; one whose acquisition was sent is answered
    // within `storeTimeoutMs` (its store-outage wait ends at once, see acrossStoreOutage),
    // and one whose handler started runs on (stop() waits for both).
    let onStop: (() => void) | undefined;
    const stopped = new Promise<Disposition>((resolve) => {
      onStop = () => {
        if (gate.sent) return;
        gate.giveBack('stopped');
        resolve(giveBack(new HandlerNotStartedError('stopped')));
      };
    });
    // A delivery that raced the stop (signal already aborted) is processed as before, until
    // the processor is closed: a message still waiting for its key or payload function then
    // (or one that comes after it: a RabbitMQ delivery that came once stop() gave up waiting
    // for the broker's answer to the cancel) is given back at once, as at the stop's abort,
    // rather than held (its timer keeping the process alive) up to its `maxHoldMs`.
    if (onStop && bounds.signal?.aborted === false)
      bounds.signal.addEventListener('abort', onStop, { once: true });
    const unlisten = onStop ? gates.onClose(onStop) : undefined;
    try {
      disposition = await Promise.race([
        decide(message, { untilMs, signal: bounds.signal, onClose: onGatesClose }, gate),
        holdPassed,
        stopped,
      ]);
    } catch (error) {
      disposition = { action: 'reject', status: 'rejected', error };
    } finally {
      clearTimeout(timer);
      if (onStop) bounds.signal?.removeEventListener('abort', onStop);
      unlisten?.();
    }
    // Given back with its acquisition unanswered: the message waits for that answer, and the
    // release of a key it grants, before it goes back. Given back at once, its redelivery
    // (after `retryDelayMs`) could find the key still held by it and wait out a whole lease.
    // Bounded: the engine gives the acquire and then the release `storeTimeoutMs` each.
    const unanswered = givenBack ? gate.pending() : undefined;
    if (unanswered !== undefined && !gate.hasStarted)
      await settleWithin([unanswered], answerBoundMs(engine.settings.storeTimeoutMs));
    if (bounds.report !== false) reportDisposition(message, disposition);
    return disposition;
  }
  // `error` only where the disposition has one: a policy may have thrown `undefined` of a
  // kept success, and the report then says so (an `error` key) as the disposition does.
  const reportDisposition = (message: TMessage, disposition: Disposition): void =>
    report(
      'error' in disposition
        ? { message, status: disposition.status, error: disposition.error }
        : { message, status: disposition.status },
    );
  /** A message whose handler must not start (see HandlerGates): back to the broker. */
  const giveBack = (refusal: HandlerNotStartedError): Disposition => ({
    action: 'retry',
    status: 'failed',
    delayMs: retryDelayMs,
    error: refusal,
  });
  async function decide(
    message: TMessage,
    bounds: OutageBounds,
    gate: MessageGate,
  ): Promise<Disposition> {
    // Awaited: an async key or payload function (a lookup) gives a promise, which canonical
    // JSON refuses: every message was rejected (dropped without a dead-letter exchange).
    let messageKey: string | undefined;
    let part: JsonValue | Uint8Array | undefined;
    // Closed already (a delivery that came after the consumer's stop()): the key and payload
    // functions are not even called.
    const closed = gate.refusal();
    if (closed) return giveBack(closed);
    try {
      messageKey = toKey(await (key ?? broker.defaultKey)(message));
      if (messageKey !== undefined)
        part = payload === false ? undefined : await (payload ?? broker.body)(message);
    } catch (error) {
      // Stopped meanwhile: the function may have failed because the application closed what
      // it reads (its database) after stop(); the message is given back, never dropped.
      const refusal = gate.refusal();
      if (refusal) return giveBack(refusal);
      throw error;
    }
    // The same for a lookup that found nothing once stopped.
    const refusal = gate.refusal();
    if (refusal) return giveBack(refusal);
    if (messageKey === undefined)
      return {
        action: 'reject',
        status: 'rejected',
        // An idem error with a code, as every other rejection (and @idem/lambda's keyless record).
        error: new InvalidInputError(
          'The message has no key (the key function returned undefined, null or "")',
        ),
      };
    const request = {
      key: messageKey,
      scope: scope ?? broker.defaultScope(message),
      fingerprint: part === undefined ? '' : fingerprint({ body: part }),
    };
    const runId = `${canonicalJson(request.scope)}\n${request.key}`;
    return acrossStoreOutage(() => tracked(message, request, runId, gate), retryDelayMs, bounds);
  }
  /**
   * One attempt, told to duplicates: a run whose handler starts is listed in `localRuns` until
   * its disposition is known; a duplicate told `in_progress` while a run of this processor held
   * the key gets that run (read before asking the store: a run that ends between the store's
   * answer and here is not missed, its promise already settled).
   */
  async function tracked(
    message: TMessage,
    request: { key: string; scope: Scope; fingerprint: string },
    runId: string,
    gate: MessageGate,
  ): Promise<Attempt<Disposition>> {
    const holder = localRuns.get(runId);
    let settle: ((disposition: Disposition) => void) | undefined;
    let run: Promise<Disposition> | undefined;
    const onStart = () => {
      run = new Promise<Disposition>((resolve) => {
        settle = resolve;
      });
      localRuns.set(runId, run);
    };
    let result: Attempt<Disposition> | undefined;
    try {
      result = await attempt(message, request, gate, onStart);
      return result;
    } finally {
      if (run !== undefined) {
        if (localRuns.get(runId) === run) localRuns.delete(runId);
        settle?.(
          result?.disposition ?? {
            action: 'retry',
            status: 'failed',
            delayMs: retryDelayMs,
            error: undefined,
          },
        );
      }
      // A run that started while the store answered (its handler called between the two
      // acquisitions' answers) is the holder too: it acquired the key.
      const disposition = result?.disposition;
      const localHolder = holder ?? localRuns.get(runId);
      if (localHolder !== undefined && disposition?.status === 'in_progress' && run === undefined)
        disposition.localRun = localHolder;
    }
  }
  async function attempt(
    message: TMessage,
    request: { key: string; scope: Scope; fingerprint: string },
    gate: MessageGate,
    onStart: () => void,
  ): Promise<Attempt<Disposition>> {
    const done = (disposition: Disposition): Attempt<Disposition> => ({
      disposition,
      outage: false,
    });
    // Given back (a slow key or payload function, the store outage wait) or stopped: nothing
    // is acquired for a handler that must not start.
    const refusal = gate.refusal();
    if (refusal) return done(giveBack(refusal));
    // What the handler itself threw is never taken for the engine's verdict on the message
    // (a handler may throw an idem error of its own, e.g. from a nested call): it is retried.
    let thrownByHandler = false;
    let handlerError: unknown;
    let ranHere = false;
    const verdict: PolicyVerdict = {};
    try {
      const executing = policy.within(verdict, () =>
        engine.execute(request, async (ctx) => {
          // Checked where the handler would start, after the store's answer: the engine
          // releases the key (owner-checked) and throws the refusal (see trackedPolicy).
          const refused = gate.refusal();
          if (refused) {
            verdict.refused = true;
            throw refused;
          }
          gate.started();
          ranHere = true;
          onStart();
          try {
            return await handler(message, ctx);
          } catch (error) {
            thrownByHandler = true;
            handlerError = error;
            throw error;
          }
        }),
      );
      gate.track(executing);
      const result = await executing;
      if (result.replayed) return done({ action: 'ack', status: 'replayed' });
      // Released, not recorded: what such a policy asks for is another delivery, never an ack.
      if (verdict.final === false)
        return done({
          action: 'retry',
          status: 'failed',
          delayMs: retryDelayMs,
          error: new OutcomeNotKeptError(),
        });
      // Kept although the policy threw of it: acked, the policy's error reported.
      if (verdict.policyFailed)
        return done({ action: 'ack', status: 'processed', error: verdict.policyFailed.error });
      return done({ action: 'ack', status: 'processed' });
    } catch (error) {
      // The policy kept the failure and the engine recorded it (a failed final write throws
      // the store's error instead): the message is done; redelivered, it would only replay.
      if (thrownByHandler && verdict.final === true && error === handlerError)
        return done({ action: 'ack', status: 'processed', error });
      // The policy kept the failure but it could not be stored (too large, or a thrown value
      // with no text, `Object.create(null)`): the engine left a marker that answers every
      // redelivery, as for a success that does not fit. Given back, the message spent a
      // delivery (dead-lettered at a `delivery-limit`) for an ack as a replay. Only when that
      // marker landed: the engine throws the same error when its write failed too (a store
      // outage, a lost lease), and an ack then settles a message that nothing records (the
      // rev31a review); it goes back as for any failed final write, and its redelivery finds
      // the marker (written late, in the background) or runs once the lease has passed.
      if (
        thrownByHandler &&
        verdict.final === true &&
        error !== handlerError &&
        isIdemError(error) &&
        NOT_STORED.includes(error.code)
      ) {
        const unmarked = markerFailureOf(error);
        if (unmarked === undefined) return done({ action: 'ack', status: 'processed', error });
        return done({
          action: 'retry',
          status: 'failed',
          delayMs: retryDelayMs,
          error: unmarked.failure,
        });
      }
      if (thrownByHandler)
        return done({ action: 'retry', status: 'failed', delayMs: retryDelayMs, error });
      return {
        disposition: classify(error, retryDelayMs, engine.settings.leaseMs, ranHere),
        outage: !ranHere && isIdemError(error, 'STORE_UNAVAILABLE'),
      };
    }
  }
  return {
    process,
    report: reportDisposition,
    close: () => gates.close(),
    idle: () => gates.idle(),
    engine: engine as Idempotency<unknown>,
  };
}

export { inProgressDelayMs, MAX_TIMER_MS } from './engine-verdicts.js';

/** How many times a held duplicate asks the store again after a local run of its key ended. */
export const MAX_LOCAL_RECHECKS = 3;
