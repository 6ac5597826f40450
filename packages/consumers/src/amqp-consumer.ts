import { setMaxListeners } from 'node:events';
import { InvalidInputError, type Scope } from '@idem/core';
import {
  type AmqpReconnectOptions,
  abortableDelay,
  eitherAborted,
  reconnectPlan,
  withinLimit,
} from './amqp-reconnect.js';
import { type ConsumerLifeOptions, ConsumerLostError, consumerLife } from './consumer-lost.js';
import {
  answerBoundMs,
  releasedAfterClose,
  settledThenWritten,
  settleWithin,
} from './handler-gate.js';
import {
  type ConsumerOptions,
  type Disposition,
  MAX_LOCAL_RECHECKS,
  MAX_TIMER_MS,
  messageProcessor,
} from './message-outcome.js';
import { checkOptionNames } from './option-names.js';

/** The fields of an amqplib message read here (structurally `ConsumeMessage`). */
export interface AmqpMessageLike {
  content: Uint8Array;
  fields: { deliveryTag: number; redelivered: boolean };
  properties: { messageId?: string | undefined; headers?: Record<string, unknown> | undefined };
}

/** The amqplib channel methods used here (structurally `Channel` or `ConfirmChannel`). */
export interface AmqpChannelLike<TMessage extends AmqpMessageLike = AmqpMessageLike> {
  consume(
    queue: string,
    onMessage: (message: TMessage | null) => void,
    options?: { noAck?: boolean },
  ): Promise<{ consumerTag: string }>;
  cancel(consumerTag: string): Promise<unknown>;
  ack(message: TMessage): void;
  nack(message: TMessage, allUpTo?: boolean, requeue?: boolean): void;
  prefetch(count: number): Promise<unknown>;
  /** amqplib's channel is an EventEmitter: its `close` says the consumer is gone with it. */
  once?(event: 'close', listener: () => void): unknown;
  removeListener?(event: 'close', listener: () => void): unknown;
  /** Used on the channels `openChannel` answers only (they are the consumer's): see there. */
  on?(event: 'error', listener: (error: unknown) => void): unknown;
  /** Used on the channels `openChannel` answers only: closed when the consumer drops them. */
  close?(): Promise<unknown>;
}

/**
 * The consumers waiting for each channel's `close`. One listener per channel calls them all:
 * consumers sharing the application's channel (one a queue) each hung one of their own, and
 * past 10 Node warned of a leak on it (MaxListenersExceededWarning,
 * test/rev32a-amqp-shared-channel.test.ts). The listener goes when its last consumer does.
 */
const channelCloseWatchers = new WeakMap<object, { listener: () => void; set: Set<() => void> }>();

/** Calls `callback` when `channel` closes, until the function it answers is called. */
function whenChannelCloses(
  channel: Pick<AmqpChannelLike, 'once' | 'removeListener'>,
  callback: () => void,
): () => void {
  if (typeof channel.once !== 'function') return () => {};
  let watch = channelCloseWatchers.get(channel);
  if (watch === undefined) {
    const set = new Set<() => void>();
    const listener = () => {
      channelCloseWatchers.delete(channel);
      for (const watcher of [...set]) watcher();
      set.clear();
    };
    watch = { listener, set };
    channelCloseWatchers.set(channel, watch);
    channel.once('close', listener);
  }
  const { listener, set } = watch;
  set.add(callback);
  return () => {
    if (!set.delete(callback) || set.size > 0) return;
    channelCloseWatchers.delete(channel);
    channel.removeListener?.('close', listener);
  };
}

/** Options of {@link consumeAmqp}. */
export interface AmqpConsumerOptions<TMessage extends AmqpMessageLike, T>
  extends ConsumerOptions<TMessage, T>,
    ConsumerLifeOptions,
    AmqpReconnectOptions {
  /**
   * An open amqplib channel (the caller owns it, and its connection). A consumer on it does not
   * recover when the channel closes or the broker cancels it: it reports `lost` and `closed`
   * answers the error. Give `openChannel` instead for a consumer that recovers by itself.
   * One of `channel` and `openChannel`, not both.
   */
  channel?: AmqpChannelLike<TMessage>;
  /**
   * Opens a channel for the consumer (connecting first when the connection is gone), declaring
   * whatever the application wants declared (the consumer declares nothing). Called once by
   * `consumeAmqp` (a failure then rejects it), and again whenever the consumer's channel
   * closes (connection lost, channel error) or the broker cancels the consumer (queue
   * deleted): after `reconnectDelayMs`, doubling to `reconnectMaxDelayMs`, each attempt
   * bounded by `openChannelTimeoutMs`, for as long as the consumer is not stopped (the status
   * says `lost` with `resubscribing: true`, then `resumed`). The channels it answers are the
   * consumer's: it listens to their `error` event (so a channel error does not crash the
   * process) and closes them when it drops them and at `stop()`. Until it answers, the channel
   * is the application's: listen to its `error` before declaring on it (a declaration the
   * broker refuses, unheard, makes amqplib tear down the whole connection). The connection stays the
   * application's. Redeliveries after a reconnect are answered from the store (acked as
   * replays, or given back while the first run still holds the key): never run twice.
   */
  openChannel?: () => Promise<AmqpChannelLike<TMessage>>;
  /**
   * The queue to consume (it must exist). `''` (the queue last declared on the channel, e.g. a
   * server-named one) only with an explicit `scope`: the default scope `['amqp', queue]` would
   * be one for every such queue.
   */
  queue: string;
  /** Messages in flight at once (`channel.prefetch`): an integer 1..65535. @default 10 */
  prefetch?: number;
  /**
   * The broker's `consumer_timeout`: RabbitMQ closes a channel that keeps a delivery unacked
   * longer (PRECONDITION_FAILED; the consumer is gone). A message waiting to be given back
   * (`retryDelayMs`, or an in-progress duplicate's wait) is held at most a third of it from its
   * delivery, then given back: a longer `retryDelayMs` is cut to that on RabbitMQ. Set it to
   * the broker's value when it is not the default (`Infinity` when the broker has none).
   * @default 1_800_000 (RabbitMQ's default, 30 min)
   */
  consumerTimeoutMs?: number;
}

/** A running consumer. */
export interface IdempotentConsumer {
  /**
   * Stops taking messages, gives back at once the messages held for a later delivery, and
   * waits up to `timeoutMs` (from 0 to 2^31-1 ms, or `Infinity`: no bound) for those in
   * flight, for the acquisitions of messages already given back, and for the final writes
   * the engine still retries in the background (a handler that ran while the store failed
   * its write; not for the engine's give-backs of timed-out acquisitions, whose handler never
   * ran: cut short, one leaves its key to its lease). Another value is refused
   * (`InvalidInputError`). No handler starts once `timeoutMs` has passed: a message whose
   * acquisition is still unanswered then is given back when the store answers, its key
   * released, and one delivered after it (a broker that did not answer the cancel in time) is
   * given back at once, its key function not called. Only for those releases does stop() wait past `timeoutMs`
   * (even `stop(0)`), at most the engine's `storeTimeoutMs` more: it resolves within
   * `timeoutMs + storeTimeoutMs`.
   */
  stop(timeoutMs?: number): Promise<void>;
  /** Messages being processed or waiting to be given back. */
  readonly inFlight: number;
  /**
   * Settles once the consumer has ended: `undefined` after `stop()`, a `ConsumerLostError`
   * (code `CONSUMER_LOST`) when the broker ended it for good (RabbitMQ on the application's
   * `channel`: the consumer cancelled, e.g. its queue deleted, or its channel closed), so a
   * consumer never goes quietly dead. Never rejects. A RabbitMQ consumer given `openChannel`,
   * and a JetStream consumer deleted under a running one, are reported through
   * `onConsumerStatus` and resume by themselves, so `closed` stays pending until `stop()`.
   */
  readonly closed: Promise<ConsumerLostError | undefined>;
}

/** Default key of an AMQP message: its `messageId` property. */
export const amqpMessageKey = (message: AmqpMessageLike): string | undefined =>
  message.properties.messageId;

/**
 * Consumes a RabbitMQ queue with manual acks: each message's handler runs at most once under
 * its key (`properties.messageId` by default) and the message is acked only after the
 * handler's outcome is recorded. A redelivery of a recorded message is acked without running
 * the handler; a duplicate still in progress elsewhere, a failed handler or a store outage is
 * nacked with requeue after a delay (never acked, never run twice); a message without a key
 * or with another payload under a recorded key is nacked without requeue (dead-lettered when
 * the queue has a dead-letter exchange).
 */
export async function consumeAmqp<TMessage extends AmqpMessageLike, T>(
  options: AmqpConsumerOptions<TMessage, T>,
): Promise<IdempotentConsumer> {
  if (typeof options !== 'object' || options === null)
    throw new InvalidInputError('consumeAmqp needs an options object');
  checkOptionNames(options, [
    'channel',
    'openChannel',
    'queue',
    'prefetch',
    'consumerTimeoutMs',
    'onConsumerStatus',
    'reconnectDelayMs',
    'reconnectMaxDelayMs',
    'openChannelTimeoutMs',
  ]);
  const {
    channel: givenChannel,
    openChannel,
    queue,
    prefetch = 10,
    consumerTimeoutMs = 1_800_000,
    onConsumerStatus,
    reconnectDelayMs,
    reconnectMaxDelayMs,
    openChannelTimeoutMs,
    ...rest
  } = options;
  const life = consumerLife(onConsumerStatus);
  if (openChannel !== undefined && typeof openChannel !== 'function')
    throw new InvalidInputError('openChannel must be a function answering a channel');
  if (openChannel !== undefined && givenChannel !== undefined)
    throw new InvalidInputError(
      'give channel (yours, not reopened) or openChannel (the consumer reopens its channels), not both',
    );
  if (
    openChannel === undefined &&
    (reconnectDelayMs !== undefined ||
      reconnectMaxDelayMs !== undefined ||
      openChannelTimeoutMs !== undefined)
  )
    throw new InvalidInputError(
      'reconnectDelayMs, reconnectMaxDelayMs and openChannelTimeoutMs apply only with openChannel',
    );
  const plan = reconnectPlan({ reconnectDelayMs, reconnectMaxDelayMs, openChannelTimeoutMs });
  // 0 is RabbitMQ's "unlimited" (every message of the queue in memory at once).
  if (!(Number.isInteger(prefetch) && prefetch >= 1 && prefetch <= 65_535))
    throw new InvalidInputError('prefetch must be an integer from 1 to 65535');
  if (
    !(
      typeof consumerTimeoutMs === 'number' &&
      consumerTimeoutMs > 0 &&
      (Number.isFinite(consumerTimeoutMs) || consumerTimeoutMs === Number.POSITIVE_INFINITY)
    )
  )
    throw new InvalidInputError(
      'consumerTimeoutMs must be a positive number of ms (the broker’s consumer_timeout), or Infinity',
    );
  // Held past RabbitMQ's consumer_timeout, a delivery gets its channel closed by the broker.
  const holdLimitMs = consumerTimeoutMs / 3;
  if (typeof queue !== 'string') throw new InvalidInputError('queue must be a string');
  // '' is "the queue last declared on this channel" (a server-named queue): ['amqp', ''] would
  // be the scope of every such queue, and one instance's outcome would answer another's copy.
  if (queue === '' && (rest.scope === undefined || rest.scope === null))
    throw new InvalidInputError(
      "queue '' (the queue last declared on the channel) needs an explicit scope: pass the server-assigned name as queue, or a scope of its own",
    );
  if (openChannel === undefined) checkChannel(givenChannel);
  const processor = messageProcessor<TMessage, T>(rest, {
    defaultKey: amqpMessageKey,
    body: (message) => message.content,
    defaultScope: () => ['amqp', queue] as Scope,
  });
  const inFlight = new Set<Promise<void>>();
  // Messages held for a later delivery: stop() gives them back at once (their timers would
  // keep the process alive for up to the delay after the connection is closed).
  const held = new Set<() => void>();
  let stopped = false;
  // Aborted by stop(): a message waiting in the consumer for the store to come back is given
  // back at once, and so is a wait to open a channel again.
  const stopping = new AbortController();
  // Each message listens to it (removed when its wait ends) twice at most (the give-back of a
  // message that has not reached the store, the store-outage wait): up to `prefetch` messages
  // at once, which is no leak (Node warned of one past 10, on the user's stderr). With
  // `openChannel`, the messages of a channel that was lost are still in flight beside those of
  // the new one (and the reconnection waits on it): twice as many.
  const listenersBound = (openChannel === undefined ? 2 : 4) * prefetch + 10;
  setMaxListeners(listenersBound, stopping.signal);
  // Aborted once the broker answered the cancel (or stop() gave up waiting for it): a delivery
  // that raced the stop (it came once `stopping` was aborted) and has not reached the store by
  // then is given back at once, as one that was in that stage at the stop() call. Until then it
  // is processed as before: it may have its handler run (its acquisition sent), and stop()
  // waits for it; a key function that never settles no longer holds even stop(Infinity) up to
  // `maxHoldMs` (test/conslate2-amqp-raced.test.ts).
  const raced = new AbortController();
  setMaxListeners(listenersBound, raced.signal);
  // Broker calls on a channel that closed meanwhile throw; the broker redelivers anyway.
  const safely = (call: () => void) => {
    try {
      call();
    } catch {
      // The channel is gone: every unacked message goes back to the queue.
    }
  };
  // A message is acked or nacked on the channel it came on, always: a delivery tag means
  // nothing on another channel (acked on the channel opened after a reconnect, it would ack
  // another message, or make the broker close that channel: unknown delivery tag).
  async function handle(session: Session, message: TMessage, deliveredAt: number): Promise<void> {
    const { channel } = session;
    // A duplicate held while a run of this consumer holds its key (a redelivery after a
    // reconnect, its first copy still running on the lost channel) asks the store again as
    // soon as that run ends: a replay once it is recorded. A few times at most (each after a
    // local run ended; a key taken over elsewhere meanwhile is held as before).
    // `onMessage` is told once per delivery: a duplicate held for a local run is told when it
    // is no longer held (its recheck's disposition, or `in_progress` when it goes back), not
    // `in_progress` and then `replayed` (see processOnce, `report: false`).
    for (let recheck = 0; ; recheck++) {
      const disposition = await processOnce(session, message, deliveredAt);
      const tell = () => processor.report(message, disposition);
      if (disposition.action !== 'retry') tell();
      if (disposition.action === 'ack') return safely(() => channel.ack(message));
      if (disposition.action === 'reject') return safely(() => channel.nack(message, false, false));
      // Held unacked for the delay (it keeps its prefetch slot), then requeued; at once when
      // the consumer stops. Never past a third of consumer_timeout from the delivery (the time
      // the handler took counts): the broker would close the channel.
      const holdMs = Math.min(
        disposition.delayMs,
        Math.max(0, deliveredAt + holdLimitMs - performance.now()),
        MAX_TIMER_MS,
      );
      // Not held on a channel that is gone: the broker has requeued the message already. Nor on
      // an attempt given up (its time limit) whose consume came through: its channel is closed,
      // no longer watched (`ended` never set), and the message was held `retryDelayMs` for nothing.
      const holdable = () => !stopped && !session.ended && !session.abandoned;
      const localRun = recheck < MAX_LOCAL_RECHECKS ? disposition.localRun : undefined;
      const waitsForRun = localRun !== undefined && holdable() && holdMs > 0;
      if (!waitsForRun) tell();
      if (!holdable() || holdMs <= 0) return safely(() => channel.nack(message, false, true));
      const ended = await hold(holdMs, localRun);
      if (ended?.action === 'ack' && holdable()) continue; // recorded: asked again, a replay
      if (waitsForRun) tell();
      if (ended === undefined || !holdable())
        return safely(() => channel.nack(message, false, true));
      // The local run failed (its key released, not recorded): its message is due for another
      // delivery after its own delay, not after the rest of its lease.
      const rest = Math.min(
        ended.action === 'retry' ? ended.delayMs : 0,
        Math.max(0, deliveredAt + holdLimitMs - performance.now()),
        MAX_TIMER_MS,
      );
      if (rest > 0 && holdable()) await hold(rest, undefined);
      return safely(() => channel.nack(message, false, true));
    }
  }

  /**
   * Waits `ms`, or until `localRun` settles (answering its disposition), or until released
   * (stop(), the channel's loss): `undefined` but for the local run's end.
   */
  function hold(
    ms: number,
    localRun: Promise<Disposition> | undefined,
  ): Promise<Disposition | undefined> {
    return new Promise<Disposition | undefined>((resolve) => {
      const finish = (value: Disposition | undefined) => {
        clearTimeout(timer);
        if (!held.delete(release)) return; // already ended
        resolve(value);
      };
      const release = () => finish(undefined);
      const timer = setTimeout(release, ms);
      // The open channel keeps the process alive while it can take the nack; once it is
      // closed (without a stop()), the nack is moot: the broker requeues the message.
      timer.unref?.();
      held.add(release);
      void localRun?.then(finish, release);
    });
  }

  /** The processor's disposition of one delivery of `session`. */
  async function processOnce(
    session: Session,
    message: TMessage,
    deliveredAt: number,
  ): Promise<Disposition> {
    const stopSignal = stopping.signal.aborted ? raced.signal : stopping.signal;
    // A message of a channel of the consumer's own that is gone (or closed after a cancel) is
    // given back, as at stop(), while it has not reached the store (its key function pending,
    // its wait for the store to come back): the broker has requeued it, and its redelivery
    // must not find the key taken by this copy, whose ack can never be sent (it was then held
    // a whole lease, and the handler ran for a copy that could not be acked).
    const either = session.gone && eitherAborted(stopSignal, session.gone.signal);
    try {
      // A message the store cannot take waits here for it, within the same hold limit.
      return await processor.process(message, {
        untilMs: deliveredAt + holdLimitMs,
        signal: either ? either.signal : stopSignal,
        report: false,
      });
    } finally {
      either?.dispose();
    }
  }

  /** One subscription: a channel and the consumer the broker made on it. */
  interface Session {
    channel: AmqpChannelLike<TMessage>;
    consumerTag?: string;
    /** Whether the channel came from `openChannel` (the consumer closes it). */
    owned: boolean;
    startedAt: number;
    /** An attempt given up (its time limit, stop()): what it still delivers goes back. */
    abandoned: boolean;
    /** The broker ended it (its channel closed, the consumer cancelled). */
    ended: boolean;
    /** The `error` a channel of the consumer's own was closed with, if any. */
    error?: unknown;
    /** A channel of the consumer's own: aborted when it ends (see handle). */
    gone?: AbortController;
    unwatch: () => void;
    /** Its messages in flight (see closeWhenSettled). */
    tasks: Set<Promise<void>>;
  }
  // The subscription messages come from; undefined while lost (and being opened again).
  let current: Session | undefined;
  // The reconnection in progress, if any: stop() ends its wait and waits for it.
  let reconnecting: Promise<void> | undefined;
  let attempt = 0;
  const ignoreError = () => {};

  /** Closes a channel of the consumer's own, not waiting for the broker's answer. */
  const closeOwned = (channel: AmqpChannelLike<TMessage>): Promise<unknown> => {
    try {
      return Promise.resolve(channel.close?.()).catch(ignoreError);
    } catch {
      return Promise.resolve(); // already closed
    }
  };

  // The broker ended the consumer (basic.cancel: its queue deleted) or its channel closed: no
  // message comes any more. Said (onConsumerStatus, `closed`), never left quietly dead. Without
  // `openChannel` not subscribed again here: a consume (or checkQueue) of a queue that does
  // not exist makes RabbitMQ close the channel (404), the application's channel, whose 'error'
  // event would crash a process without a listener; the application creates the consumer
  // again. With it, a channel of the consumer's own is opened again, at growing intervals.
  const sessionEnded = (session: Session, error: ConsumerLostError) => {
    session.unwatch();
    session.ended = true;
    session.gone?.abort();
    if (stopped || session !== current) return;
    current = undefined;
    life.lost(error, openChannel !== undefined);
    // Messages held for a later delivery go back now (on a closed channel the broker has
    // requeued them already); those in flight finish, and their acks are tried as usual (on
    // their own channel: if it is gone, the broker redelivers them, answered from the store).
    for (const release of [...held]) release();
    if (openChannel === undefined) return;
    // After a basic.cancel the channel is still open: the consumer's own, it is closed once
    // its messages in flight are settled (see closeWhenSettled).
    if (session.owned) closeWhenSettled(session);
    // A channel that lasted the longest wait worked: the waits start again from the first.
    if (performance.now() - session.startedAt >= plan.maxDelayMs) attempt = 0;
    reconnecting ??= reconnect(openChannel);
  };

  // Channels of the consumer's own cancelled by the broker, closed once their messages in flight
  // are settled: stop() closes them at its end.
  const draining = new Set<Session>();
  // How long a cancelled channel is kept open for its messages in flight: a handler's message
  // is settled by its `maxHoldMs` (given back then), an acquisition still unanswered then
  // within `2 × storeTimeoutMs` + 1 s more.
  const { maxHoldMs, storeTimeoutMs } = processor.engine.settings;
  const cancelDrainMs = Math.min(maxHoldMs + answerBoundMs(storeTimeoutMs), MAX_TIMER_MS);

  /**
   * Closes a channel the broker cancelled the consumer of (basic.cancel: its queue deleted, a
   * node of it failed) once the messages in flight on it are settled, their acks and nacks
   * sent on it (at most `cancelDrainMs`; at stop() at once after its waits). Closed at once
   * before, a handler still running could not ack its message: requeued by the close (when
   * the queue still exists) and redelivered, answered from the store.
   */
  function closeWhenSettled(session: Session): void {
    draining.add(session);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const limit = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, cancelDrainMs);
      timer.unref?.();
    });
    void Promise.race([Promise.allSettled([...session.tasks]), limit]).then(() => {
      clearTimeout(timer);
      if (draining.delete(session)) void closeOwned(session.channel);
    });
  }

  /** Sets `prefetch` and consumes `queue` on `channel`; `session.unwatch` set at once. */
  async function subscribe(session: Session): Promise<void> {
    const { channel } = session;
    await channel.prefetch(prefetch);
    // Given up meanwhile (its time limit, stop()): no consumer is made on its channel (one on a
    // channel the consumer cannot close would take deliveries only to give them back).
    if (session.abandoned) throw new Error('abandoned');
    session.unwatch = whenChannelCloses(channel, () =>
      sessionEnded(
        session,
        new ConsumerLostError(
          openChannel === undefined
            ? `The channel of the consumer of queue '${queue}' closed (the connection was lost, or the broker closed the channel): no message is consumed any more; create the consumer again on a new channel`
            : `The channel of the consumer of queue '${queue}' closed (the connection was lost, or the broker closed the channel): a channel is opened again (openChannel)`,
          session.error === undefined ? undefined : { cause: session.error },
        ),
      ),
    );
    const { consumerTag } = await channel.consume(
      queue,
      (message) => {
        if (message === null) {
          // The broker cancelled the consumer (its queue was deleted, or a node of it failed).
          sessionEnded(
            session,
            new ConsumerLostError(
              openChannel === undefined
                ? `The broker cancelled the consumer of queue '${queue}' (basic.cancel: the queue was deleted, or its node failed): no message is consumed any more; create the consumer again once the queue exists`
                : `The broker cancelled the consumer of queue '${queue}' (basic.cancel: the queue was deleted, or its node failed): a channel is opened again (openChannel)`,
            ),
          );
          return;
        }
        // An attempt given up whose consume came through after all: its channel is being
        // closed, and the message goes back unprocessed.
        if (session.abandoned) return safely(() => channel.nack(message, false, true));
        const task = handle(session, message, performance.now()).finally(() => {
          inFlight.delete(task);
          session.tasks.delete(task);
        });
        inFlight.add(task);
        session.tasks.add(task);
      },
      { noAck: false },
    );
    session.consumerTag = consumerTag;
    if (session.abandoned) {
      // Given up while the consume was on its way: what it made is cancelled.
      session.unwatch();
      void Promise.resolve()
        .then(() => channel.cancel(consumerTag))
        .catch(ignoreError);
    }
  }

  /** A channel of the consumer's own from `open`, subscribed; bounded in time. */
  async function openSession(open: () => Promise<AmqpChannelLike<TMessage>>): Promise<Session> {
    const session: Session = {
      channel: undefined as unknown as AmqpChannelLike<TMessage>,
      owned: true,
      startedAt: performance.now(),
      abandoned: false,
      ended: false,
      gone: new AbortController(),
      unwatch: () => {},
      tasks: new Set(),
    };
    // Each of its messages in flight listens to it once (up to `prefetch`).
    setMaxListeners(prefetch + 10, (session.gone as AbortController).signal);
    const work = (async () => {
      const channel = await open();
      checkChannel(channel);
      session.channel = channel;
      // The consumer's own: a channel error (a 404 on consume, a delivery held too long) is
      // told through 'close' and must not crash the process as an unheard 'error' event.
      // Kept as the cause of the loss it closes the channel with (its reason: a
      // consumer_timeout passed, a precondition failed), which the application no longer hears.
      channel.on?.('error', (error: unknown) => {
        session.error = error;
      });
      if (session.abandoned) throw new Error('abandoned');
      await subscribe(session);
    })();
    try {
      await withinLimit(work, plan.attemptTimeoutMs, stopping.signal);
      return session;
    } catch (error) {
      session.abandoned = true;
      session.unwatch();
      session.gone?.abort();
      // A channel answered late (after the limit, after stop()) is closed when it comes.
      void work.then(
        () => closeOwned(session.channel),
        () => (session.channel === undefined ? undefined : closeOwned(session.channel)),
      );
      if (session.channel !== undefined) void closeOwned(session.channel);
      throw error;
    }
  }

  /** Opens a channel again, at growing intervals, until one consumes or the consumer stops. */
  async function reconnect(open: () => Promise<AmqpChannelLike<TMessage>>): Promise<void> {
    try {
      await reconnectUntilConsuming(open);
    } finally {
      // In the same turn as the subscription is made current: a loss of it, however soon,
      // starts a reconnection of its own (with `.finally()` a turn later, it could find this
      // one still set and none would be started).
      reconnecting = undefined;
    }
  }

  async function reconnectUntilConsuming(
    open: () => Promise<AmqpChannelLike<TMessage>>,
  ): Promise<void> {
    while (!stopped) {
      await abortableDelay(plan.wait(attempt), stopping.signal);
      if (stopped) return;
      attempt = Math.min(attempt + 1, 40);
      let session: Session;
      try {
        session = await openSession(open);
      } catch {
        continue; // refused, thrown, timed out: the next attempt waits longer
      }
      // Stopped meanwhile, or its channel closed between the consume's answer and now (its
      // loss went unheard: it was not the current one yet): dropped, and tried again.
      if (stopped || session.ended) {
        session.abandoned = true;
        session.unwatch();
        session.gone?.abort();
        void closeOwned(session.channel);
        if (stopped) return;
        continue;
      }
      current = session;
      life.resumed();
      return;
    }
  }

  // No consumer answered: nothing of it may go on (no reconnection, no late channel kept).
  const failStart = (error: unknown): never => {
    stopped = true;
    stopping.abort();
    throw error;
  };
  if (openChannel !== undefined) {
    // The first attempt is bounded as every other one (an `openChannel` that hangs would hang
    // consumeAmqp); its failure is the caller's to see (a wrong URL, credentials, queue).
    const first = await openSession(openChannel).catch(failStart);
    if (first.ended) {
      first.abandoned = true;
      first.gone?.abort();
      void closeOwned(first.channel);
      failStart(
        new ConsumerLostError(
          `The channel of the consumer of queue '${queue}' closed as it started`,
        ),
      );
    }
    current = first;
  } else {
    const first: Session = {
      channel: givenChannel as AmqpChannelLike<TMessage>,
      owned: false,
      startedAt: performance.now(),
      abandoned: false,
      ended: false,
      unwatch: () => {},
      tasks: new Set(),
    };
    // Current before it consumes: a channel closed meanwhile is told (as before).
    current = first;
    try {
      await subscribe(first);
    } catch (error) {
      first.unwatch();
      failStart(error);
    }
  }
  let cancelled: Promise<unknown> | undefined;
  // Whether the broker answered the cancel (or the channel failed it): no delivery comes after.
  let cancelSettled = false;
  return {
    async stop(timeoutMs = 30_000) {
      checkStopTimeout(timeoutMs);
      const deadline = performance.now() + timeoutMs;
      stopped = true;
      // Ends a wait to open a channel again, and an attempt in progress (its channel closed).
      stopping.abort();
      const session = current;
      session?.unwatch();
      if (session?.consumerTag === undefined) cancelSettled = true;
      // Bounded: a broker that went silent never answers the cancel.
      cancelled ??=
        session?.consumerTag === undefined
          ? Promise.resolve()
          : session.channel.cancel(session.consumerTag).then(
              () => {
                cancelSettled = true;
              },
              () => {
                cancelSettled = true;
              },
            );
      await settleWithin([cancelled, reconnecting ?? Promise.resolve()], timeoutMs);
      // Not answered within `timeoutMs` (a broker gone silent): deliveries may still come, when
      // the broker speaks again, and no handler may start any more (`timeoutMs` has passed).
      // Closed now, the processor gives each back at once, its key function not called; left
      // open until after the waits below, a delivery that came meanwhile was processed as
      // before the stop (its key asked, its handler started if the store answered first) and
      // ran on past stop(), which did not wait for it (test/consstop30-silent-cancel.test.ts).
      if (!cancelSettled) {
        processor.close();
        raced.abort();
      }
      // The deliveries that raced the cancel have all come (the broker sends the cancel-ok
      // after them): those still waiting for their key or payload function are given back.
      // A turn of the event loop first, so that one whose key is at hand (no lookup) reaches
      // the store and runs, as before.
      if (!raced.signal.aborted) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        raced.abort();
      }
      // After the cancel (the broker takes the frames of a channel in order): the requeued
      // messages are not delivered to this consumer again.
      for (const release of [...held]) release();
      // The messages given back at their maxHoldMs whose acquisition the store has not
      // answered yet are waited for too: answered, their key is released (their handler never
      // starts), before the application closes the store's connection; and then the final
      // writes the engine still retries in the background, those of the handlers that ended
      // meanwhile included (see settledThenWritten).
      await settledThenWritten(
        [...inFlight, processor.idle()],
        processor,
        Math.max(0, deadline - performance.now()),
      );
      // Past this no handler of this consumer starts: one whose acquisition is answered
      // later (the bound passed) is given back, its key released, and stop() waits for that
      // release, at most storeTimeoutMs past `timeoutMs` (see releasedAfterClose).
      processor.close();
      await releasedAfterClose(processor);
      // A channel of the consumer's own is closed once its acks are sent (in order before the
      // close); the broker's answer is waited for within what is left of `timeoutMs`.
      // The channels cancelled by the broker still open for their messages in flight too.
      const closing = [...draining].map((cancelledSession) => closeOwned(cancelledSession.channel));
      draining.clear();
      if (session?.owned) closing.push(closeOwned(session.channel));
      if (closing.length > 0)
        await settleWithin(
          closing,
          Math.min(Math.max(0, deadline - performance.now()), CLOSE_WAIT_MS),
        );
      life.end();
    },
    get inFlight() {
      return inFlight.size;
    },
    closed: life.closed,
  };
}

/** The longest stop() waits for the broker to answer the close of a channel of the consumer's own. */
const CLOSE_WAIT_MS = 5_000;

/** A missing channel (or a Promise of one, an `await` forgotten) is named, not a TypeError. */
function checkChannel(channel: unknown): void {
  if (
    typeof channel !== 'object' ||
    channel === null ||
    !['prefetch', 'consume', 'cancel', 'ack', 'nack'].every(
      (name) => typeof (channel as Record<string, unknown>)[name] === 'function',
    )
  )
    throw new InvalidInputError(
      'channel (or what openChannel answers) must be an open amqplib channel (with prefetch, consume, cancel, ack and nack)',
    );
}

/**
 * `stop(timeoutMs)`: a number of ms from 0 to 2^31-1 (Node's longest timer: a longer one
 * fires at once), or `Infinity` for "as long as it takes".
 */
export function checkStopTimeout(timeoutMs: unknown): asserts timeoutMs is number {
  if (
    !(
      typeof timeoutMs === 'number' &&
      timeoutMs >= 0 &&
      (timeoutMs <= MAX_TIMER_MS || timeoutMs === Number.POSITIVE_INFINITY)
    )
  )
    throw new InvalidInputError(
      `stop(timeoutMs): a number of ms from 0 to ${MAX_TIMER_MS}, or Infinity (no bound)`,
    );
}
