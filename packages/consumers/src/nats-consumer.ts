import { setMaxListeners } from 'node:events';
import { deriveKey, InvalidInputError, isValidKey, type Scope } from '@idem/core';
import { checkStopTimeout, type IdempotentConsumer } from './amqp-consumer.js';
import { type ConsumerLifeOptions, ConsumerLostError, consumerLife } from './consumer-lost.js';
import { releasedAfterClose, settledThenWritten, settleWithin } from './handler-gate.js';
import {
  type ConsumerOptions,
  type Disposition,
  MAX_LOCAL_RECHECKS,
  MAX_TIMER_MS,
  messageProcessor,
} from './message-outcome.js';
import { checkOptionNames } from './option-names.js';

/** The fields of a JetStream message read here (structurally `JsMsg` of `nats`). */
export interface JsMsgLike {
  data: Uint8Array;
  seq: number;
  info: {
    stream: string;
    consumer: string;
    streamSequence: number;
    redeliveryCount: number;
    /** When the stream stored the message, ns since the epoch (nats.js 2.x `info.timestampNanos`). */
    timestampNanos?: number;
  };
  headers?: { get(name: string): string } | undefined;
  ack(): void;
  nak(millis?: number): void;
  working(): void;
  term(reason?: string): void;
}

/** The messages of `consumer.consume()`: an async iterable that can be stopped. */
export interface ConsumerMessagesLike<TMessage extends JsMsgLike> extends AsyncIterable<TMessage> {
  stop(): void;
  /**
   * The pull's status events (nats.js 2.x: `consumer_deleted`, `consumer_not_found`,
   * `stream_not_found`, `next`...), read to tell the application that the broker's consumer is
   * gone and when it pulls again.
   */
  status?():
    | Promise<AsyncIterable<{ type: string; data?: unknown }>>
    | AsyncIterable<{
        type: string;
        data?: unknown;
      }>;
}

/** A pull consumer (structurally `Consumer` of `nats`, from `js.consumers.get(stream, name)`). */
export interface JetStreamConsumerLike<TMessage extends JsMsgLike> {
  consume(options?: {
    max_messages?: number;
    expires?: number;
  }): Promise<ConsumerMessagesLike<TMessage>>;
  /**
   * The consumer's info (`Consumer.info(true)` of `nats`: the cached one, no broker call once
   * `consume()` has started), read to tell a durable consumer from an ordered or ephemeral
   * one for the default scope.
   */
  info?(cached?: boolean): Promise<{
    name?: string;
    config?: ConsumerConfigLike;
  }>;
}

/** `working()` interval when neither the option nor the consumer's ack_wait says otherwise. */
const DEFAULT_WORKING_INTERVAL_MS = 10_000;
/** The shortest `working()` interval fitted to a short ack_wait (a smaller one floods NATS). */
const MIN_WORKING_INTERVAL_MS = 50;

/** The parts of a consumer's config read here (`ack_wait` in ns, as NATS gives it). */
interface ConsumerConfigLike {
  durable_name?: string;
  name?: string;
  ack_policy?: string;
  ack_wait?: number;
}

/** Status events of nats.js 2.x meaning the broker's consumer (or its stream) is gone. */
const GONE_EVENTS = new Set(['consumer_deleted', 'consumer_not_found', 'stream_not_found']);

/** The longest wait between two attempts to consume again a pull that ended by itself. */
const RESUBSCRIBE_MAX_MS = 30_000;

/** The pull's connection as nats.js 2.x keeps it (`messages.consumer.api.nc`), if it is there. */
function connectionOf(
  messages: object,
): { isClosed?: () => boolean; closed?: () => Promise<unknown> } | undefined {
  const nc = (
    messages as {
      consumer?: { api?: { nc?: { isClosed?: () => boolean; closed?: () => Promise<unknown> } } };
    }
  ).consumer?.api?.nc;
  return typeof nc === 'object' && nc !== null ? nc : undefined;
}

/**
 * The callbacks waiting for each connection's `closed()`. nats.js gives one promise for the
 * connection's life: a reaction hung on it stays until the connection closes, with everything
 * it holds. Hung there once per connection, it calls the pulls watching it at that time; each
 * pull is taken out when it ends, so neither a pull consumed again nor a consumer stopped on a
 * long-lived connection is kept (each pull's own reaction held the pull, and through it its
 * whole consumer, until the connection closed: test/rev32a-reconsume.test.ts).
 */
const closeWatchers = new WeakMap<object, Set<() => void>>();

/** Calls `callback` when `nc` closes, until the function it answers is called. */
function whenClosed(
  nc: { closed?: () => Promise<unknown> } | undefined,
  callback: () => void,
): () => void {
  if (typeof nc?.closed !== 'function') return () => {};
  let watchers = closeWatchers.get(nc);
  if (watchers === undefined) {
    let closed: Promise<unknown>;
    try {
      closed = Promise.resolve(nc.closed());
    } catch {
      return () => {};
    }
    const set = new Set<() => void>();
    watchers = set;
    closeWatchers.set(nc, set);
    closed
      .catch(() => {})
      .then(() => {
        closeWatchers.delete(nc);
        for (const watcher of [...set]) watcher();
        set.clear();
      });
  }
  const set = watchers;
  set.add(callback);
  return () => {
    set.delete(callback);
  };
}

/** Whether nats.js says the pull's connection is closed. */
function isClosed(messages: object): boolean {
  try {
    return connectionOf(messages)?.isClosed?.() === true;
  } catch {
    return false;
  }
}

/** Waits `ms` (on a timer that does not keep the process alive), or until `signal` aborts. */
function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref?.();
    signal.addEventListener('abort', done, { once: true });
  });
}

/** How long `stop()` waits for the broker to answer the drain before stopping the pull anyway. */
const DRAIN_LIMIT_MS = 5_000;

/**
 * The delay of the `nak` that gives back what arrived once stopped. nats.js sends the pull
 * requests it had queued as its iterator reaches them, so some leave after the UNSUB; sent
 * with no delay, the `nak`s could reach the server while it still takes in those requests,
 * and a redelivery then went to a pull nobody listened to (nats-server 2.9.10: 1 message of
 * 8 lost until `ack_wait` in about 1 stop of 5 mid-flow; none in 60 runs with this delay,
 * under two busy loops: `test/rev13fix-jetstream-stop.test.ts`). The `nak`s themselves
 * leave at once, so `stop()` is not longer for it.
 */
const GIVE_BACK_DELAY_MS = 250;

/**
 * Stops the pull without dropping what the server already sent for it. nats.js's
 * `messages.stop()` unsubscribes the pull's inbox at once, and the messages the server was
 * still sending for the last pull are then dropped by the client: ack-pending at the server,
 * they would come back only when `ack_wait` passes, each having spent a delivery of
 * `max_deliver`. Draining the inbox's subscription instead (UNSUB, then a PING/PONG round
 * trip) hands the consumer everything the server sent before it saw the UNSUB (the loop
 * gives it back, see {@link GIVE_BACK_DELAY_MS}), and the server delivers nothing after it to
 * an inbox nobody listens on. nats.js 2.x ends the iteration when the drained subscription
 * closes; `messages.stop()` follows in every case (a no-op once ended), and after 5 s at most
 * (a broker that went silent). A `messages` without that subscription (another client, a later
 * nats.js) is stopped as before.
 */
function stopPulling(messages: { stop(): void }): void {
  const sub = (messages as { sub?: { drain?: unknown; isClosed?: () => boolean } }).sub;
  if (typeof sub?.drain !== 'function' || sub.isClosed?.() === true) {
    messages.stop();
    return;
  }
  let drained: Promise<unknown>;
  try {
    drained = Promise.resolve((sub.drain as () => Promise<unknown>).call(sub));
  } catch {
    messages.stop();
    return;
  }
  // A broker that went silent never answers the PING: the pull is stopped anyway.
  const bound = setTimeout(() => messages.stop(), DRAIN_LIMIT_MS);
  bound.unref?.();
  drained
    .catch(() => {})
    .then(() => {
      clearTimeout(bound);
      messages.stop();
    });
}

/**
 * Whether a consumer's name is the same at every start, so it may be in the default scope: a
 * durable consumer, or one the application named (`name`, NATS 2.9+) with acks. Not an
 * ephemeral one the server named (its config has no `name`), nor an ordered one (nats.js
 * draws its name at every start; it never acks).
 */
function stableName(
  config: { durable_name?: string; name?: string; ack_policy?: string } | undefined,
): boolean {
  if (typeof config?.durable_name === 'string' && config.durable_name !== '') return true;
  return (
    typeof config?.name === 'string' &&
    config.name !== '' &&
    typeof config.ack_policy === 'string' &&
    config.ack_policy !== 'none'
  );
}

/** Options of {@link consumeJetStream}. */
export interface JetStreamConsumerOptions<TMessage extends JsMsgLike, T>
  extends ConsumerOptions<TMessage, T>,
    ConsumerLifeOptions {
  /**
   * A pull consumer with explicit acks: a durable one or one the application named (`name`:
   * its name is in the default scope, so it must be the same at every start), or an ordered /
   * ephemeral one with an explicit `scope` (its name changes at every start, so without one it
   * is refused, `InvalidInputError`).
   */
  consumer: JetStreamConsumerLike<TMessage>;
  /** Messages processed at once. @default 1 */
  concurrency?: number;
  /**
   * How often a running handler tells JetStream it is still working (`msg.working()`), so the
   * consumer's `ack_wait` does not pass meanwhile. It MUST be below the consumer's `ack_wait`
   * (read from `consumer.info(true)`): a value at or above it is refused at start
   * (`InvalidInputError`). `null` counts as not given.
   * @default a third of the consumer's `ack_wait`, at most 10_000 and at least 50 (10_000 when
   * the consumer's info cannot be read)
   */
  workingIntervalMs?: number | null;
  /**
   * How long each pull request waits at the server (nats.js `consume({ expires })`, at least
   * 1,000). It is also how often nats.js checks whether a deleted consumer exists again (the
   * consumer resumes then), and about how long a deletion takes to be seen when no pull was
   * waiting. @default nats.js's (30_000)
   */
  expiresMs?: number;
}

/**
 * Default key of a JetStream message: its `Nats-Msg-Id` header when it has one (the
 * publisher's id, which also catches a publisher's resend outside the stream's duplicate
 * window), else `stream:streamSequence:timestampNanos`. The stored timestamp is the same at
 * every redelivery, and tells apart the messages of a deleted and recreated stream, whose
 * sequences start at 1 again (`stream:streamSequence` alone made them replay, or be
 * rejected as mismatches, against the old stream's records).
 *
 * The two kinds never meet: a `Nats-Msg-Id` spelled like a fallback key (`<anything>:<digits>:<digits>`,
 * or `<this stream>:<digits>`), or one that starts with `Nats-Msg-Id.`, is keyed as
 * `Nats-Msg-Id.<id>`; an id that is no key string (longer than 255 characters, or not printable
 * ASCII, marked or not) is keyed `Nats-Msg-Id.<its digest>`, never the bare digest a
 * publisher could send as an id. The mark ends with a
 * `.`, which no stream name holds, so no fallback key starts with it (with `Nats-Msg-Id:` a
 * stream named `Nats-Msg-Id:a` had fallback keys spelled like marked ids). Before, such an id was
 * the key as it is, and one message's recorded outcome answered another's delivery (the
 * message with id `ORDERS:5:1733…` and the fifth message of stream ORDERS stored at that
 * time without an id). Every other id, and every fallback key, is as before.
 */
export const jetStreamMessageKey = (message: JsMsgLike): string => {
  const { stream, streamSequence, timestampNanos } = message.info;
  const id = message.headers?.get('Nats-Msg-Id');
  if (id) {
    const key = spelledLikeFallback(id, stream) ? `${MSG_ID_MARK}${id}` : id;
    // An id that is no key string (longer than 255 characters, not printable ASCII) is hashed
    // here, marked: hashed unmarked (by the processor, as any other value), its digest was a
    // literal id another publisher could send, and the two messages shared a key
    // (test/amqp32b-hashed-id.test.ts). A marked digest holds no ':' and does not start with
    // the mark: no marked literal id is spelled like it.
    return isValidKey(key) ? key : `${MSG_ID_MARK}${deriveKey(id)}`;
  }
  return typeof timestampNanos === 'number' && Number.isFinite(timestampNanos)
    ? `${stream}:${streamSequence}:${timestampNanos}`
    : `${stream}:${streamSequence}`;
};

/**
 * What marks a `Nats-Msg-Id` that could be read as a fallback key (see jetStreamMessageKey):
 * its `.` is what no stream name, hence no fallback key's beginning, can hold.
 */
const MSG_ID_MARK = 'Nats-Msg-Id.';

/**
 * Whether a `Nats-Msg-Id` could equal a fallback key (`stream:seq:timestampNanos` of any
 * stream a scope may span; `stream:seq`, given by a client without `timestampNanos`, of this
 * stream: `order:42` of another is a common id, kept as it is), or a marked one.
 */
function spelledLikeFallback(id: string, stream: string): boolean {
  if (id.startsWith(MSG_ID_MARK) || /^.+:\d+:\d+$/.test(id)) return true;
  return (
    id.length > stream.length + 1 &&
    id.startsWith(`${stream}:`) &&
    /^\d+$/.test(id.slice(stream.length + 1))
  );
}

/**
 * Consumes a JetStream pull consumer: each message's handler runs at most once under its key
 * and the message is acked only after the outcome is recorded. A redelivery of a recorded
 * message is acked without running the handler; a duplicate in progress elsewhere, a failed
 * handler or a store outage is `nak`ed with a delay; a message without a key or with another
 * payload under a recorded key is terminated (`term`).
 */
export async function consumeJetStream<TMessage extends JsMsgLike, T>(
  options: JetStreamConsumerOptions<TMessage, T>,
): Promise<IdempotentConsumer> {
  if (typeof options !== 'object' || options === null)
    throw new InvalidInputError('consumeJetStream needs an options object');
  checkOptionNames(options, [
    'consumer',
    'concurrency',
    'workingIntervalMs',
    'expiresMs',
    'onConsumerStatus',
  ]);
  const {
    consumer,
    concurrency = 1,
    workingIntervalMs: workingIntervalOption,
    expiresMs,
    onConsumerStatus,
    ...rest
  } = options;
  const life = consumerLife(onConsumerStatus);
  if (
    expiresMs !== undefined &&
    !(
      typeof expiresMs === 'number' &&
      Number.isFinite(expiresMs) &&
      expiresMs >= 1_000 &&
      expiresMs <= MAX_TIMER_MS
    )
  )
    throw new InvalidInputError(
      `expiresMs must be a number of ms from 1000 to ${MAX_TIMER_MS} (nats.js refuses less)`,
    );
  // A missing consumer (or a Promise of one, an `await` forgotten) is named, not a TypeError.
  if (
    typeof consumer !== 'object' ||
    consumer === null ||
    typeof (consumer as { consume?: unknown }).consume !== 'function'
  )
    throw new InvalidInputError(
      'consumer must be a JetStream pull consumer (js.consumers.get(stream, name)), with consume()',
    );
  if (!(Number.isSafeInteger(concurrency) && concurrency > 0))
    throw new InvalidInputError('concurrency must be a positive integer');
  let workingIntervalMs = workingIntervalOption ?? DEFAULT_WORKING_INTERVAL_MS;
  if (
    !(
      typeof workingIntervalMs === 'number' &&
      Number.isFinite(workingIntervalMs) &&
      workingIntervalMs > 0 &&
      workingIntervalMs <= MAX_TIMER_MS
    )
  )
    throw new InvalidInputError(
      `workingIntervalMs must be a positive number of ms, at most ${MAX_TIMER_MS} (the longest timer Node keeps: a longer one fires every ms)`,
    );
  // Read once consume() has started (before any message is handled).
  let durable = true;
  const processor = messageProcessor<TMessage, T>(rest, {
    defaultKey: jetStreamMessageKey,
    body: (message) => message.data,
    // Each durable consumer is its own application (billing, shipping...): one consumer's
    // outcome must never answer another's delivery of the same stream message (an ordered or
    // ephemeral consumer, whose name changes at every start, is refused below without a scope).
    defaultScope: (message) => ['nats', message.info.stream, message.info.consumer] as Scope,
  });
  const pullOptions = {
    max_messages: Math.max(concurrency, 1) * 2,
    ...(expiresMs === undefined ? {} : { expires: Math.ceil(expiresMs) }),
  };
  let messages = await consumer.consume(pullOptions);
  // `scope: null` is "not given" (the default scope), so it is checked as one.
  const defaultScope = rest.scope === undefined || rest.scope === null;
  let config: ConsumerConfigLike | undefined;
  if (typeof consumer.info === 'function') {
    try {
      config = (await consumer.info(true))?.config;
    } catch (error) {
      // Read only for the ack_wait check when a scope is given: as before, not needed then.
      if (defaultScope) {
        messages.stop();
        throw error;
      }
    }
  }
  // JetStream redelivers a message whose ack_wait passes while its handler runs: the
  // redelivery is given back as a duplicate in progress (the key is held: the handler never
  // runs twice), but each spends a delivery of `max_deliver` and is sent again about once a
  // lease. The `working()` interval is fitted to the consumer's ack_wait (a third of it, when
  // not given), and one that cannot keep it from passing is refused.
  const ackWaitMs =
    config?.ack_policy !== 'none' &&
    typeof config?.ack_wait === 'number' &&
    Number.isFinite(config.ack_wait) &&
    config.ack_wait > 0
      ? config.ack_wait / 1_000_000
      : undefined;
  if (ackWaitMs !== undefined) {
    if (workingIntervalOption === undefined || workingIntervalOption === null)
      workingIntervalMs = Math.max(
        MIN_WORKING_INTERVAL_MS,
        Math.min(DEFAULT_WORKING_INTERVAL_MS, Math.floor(ackWaitMs / 3)),
      );
    // A derived one too: an ack_wait under 150 ms leaves no interval of at least 50 ms below it.
    if (workingIntervalMs >= ackWaitMs) {
      messages.stop();
      throw new InvalidInputError(
        `workingIntervalMs (${workingIntervalMs}) must be below the consumer's ack_wait (${ackWaitMs} ms): JetStream would redeliver every running handler's message at each ack_wait, spending max_deliver; leave workingIntervalMs out (a third of ack_wait is then used) or set it to about ack_wait / 3`,
      );
    }
  }
  if (defaultScope && typeof consumer.info === 'function') {
    durable = stableName(config);
    // An ordered or ephemeral consumer's name is random per start: in the default scope it
    // would make a restarted process run every message again; left out, two applications
    // reading the stream would answer each other's messages. Only the app can say which
    // outcomes its messages share.
    if (!durable) {
      messages.stop();
      throw new InvalidInputError(
        "an ordered or ephemeral JetStream consumer (no durable_name, no name of the application's) needs an explicit scope (its name changes at every start, so the default ['nats', stream, consumer] would run every message again after a restart): pass scope, e.g. ['nats', stream, 'billing']",
      );
    }
  }
  const inFlight = new Set<Promise<void>>();
  // Aborted by stop(): a message waiting in the consumer for the store to come back (its
  // `working()` still sent) is given back at once.
  const stopping = new AbortController();
  // Each message listens to it (removed when its wait ends) twice at most (see consumeAmqp):
  // up to `concurrency` messages at once, which is no leak (Node warned of one past 10).
  setMaxListeners(2 * Math.max(concurrency, 1) + 10, stopping.signal);

  async function handle(message: TMessage): Promise<void> {
    const working = setInterval(() => {
      try {
        message.working();
      } catch {
        // a closed connection: nothing to tell (JetStream redelivers after ack_wait)
      }
    }, workingIntervalMs);
    // The pull's connection keeps the process alive while `working()` can be sent; once the
    // application closed it after stop(), a handler still running kept the process alive up to
    // its `maxHoldMs` through this interval (test/rev33a-exit.test.ts).
    working.unref?.();
    let disposition: Disposition;
    try {
      disposition = await settleLocally(message);
    } finally {
      clearInterval(working);
    }
    // Told once per delivery, its last disposition (see settleLocally).
    processor.report(message, disposition);
    if (disposition.action === 'ack') message.ack();
    // A bare TERM: a reason (`+TERM <reason>`, nats-server 2.10) is not understood by earlier
    // servers, which then leave the message pending and send it again at every ack_wait. The
    // reason reaches `onMessage` (the disposition's error).
    else if (disposition.action === 'reject') message.term();
    // Once stopped (a message given back because stop() came before its handler, or its
    // outage wait), not while the pull's subscription may still be open: the server could
    // redeliver it to that pull and it would be dropped with it (see `late`).
    else if (stopped) giveBackAfterPull(message, disposition.delayMs);
    // Whole milliseconds: nats.js sends the delay as `ms * 1e6` nanoseconds unrounded, and a
    // server that cannot read a fractional duration (nats-server 2.9) takes a plain NAK and
    // redelivers at once (a computed 2000 / 3 ms burned max_deliver in milliseconds).
    else message.nak(Math.ceil(disposition.delayMs));
  }

  /**
   * The message's disposition. A duplicate told `in_progress` while a run of this consumer
   * holds its key (JetStream redelivered it while its first delivery's handler still runs
   * here: an `ack_wait` passed, a `working()` lost in a reconnect) is held here, its
   * `working()` still sent, until that run ends or the in-progress delay passes: once the run
   * is recorded the store is asked again, and the duplicate acked as a replay on this
   * delivery. `nak`ed with the delay at once, it waited the whole delay (the holder's lease,
   * 30 s by default) however soon the run ended. Such holds do not take a slot of
   * `concurrency` (a long run would keep its duplicate's slot idle), and at most `concurrency`
   * of them are held at once: one more is `nak`ed with its delay as before. A few rechecks per
   * delivery at most; stop() ends every hold at once (the message given back).
   */
  async function settleLocally(message: TMessage): Promise<Disposition> {
    const bounds = { signal: stopping.signal, report: false };
    let disposition = await processor.process(message, bounds);
    for (let recheck = 0; recheck < MAX_LOCAL_RECHECKS; recheck++) {
      if (disposition.action !== 'retry' || disposition.localRun === undefined) break;
      if (stopped || localHolds.size >= Math.max(concurrency, 1)) break;
      const ended = await holdForRun(disposition.delayMs, disposition.localRun);
      // Stopped: given back (after the pull, see handle).
      if (ended === 'released') break;
      // The delay was served here: given back for a delivery at once.
      if (ended === 'elapsed') return { ...disposition, delayMs: 0, localRun: undefined };
      // The local run failed (its key released, nothing recorded): due after its own delay.
      if (ended.action !== 'ack') {
        const delayMs = ended.action === 'retry' ? ended.delayMs : disposition.delayMs;
        return { ...disposition, delayMs, localRun: undefined };
      }
      // Recorded: asked again, answered as a replay; the record gone meanwhile (rare), its
      // handler runs on this delivery. So only within `concurrency`: the slot this duplicate
      // left while held may have been taken (its holder ran on past its maxHoldMs, its own
      // slot freed then), and the handler ran beside the others, one more than `concurrency`
      // (test/consumers34-js-rerun.test.ts). Stopped meanwhile: given back, for a delivery at
      // once (the run it was held on has ended): with the in-progress delay it stayed away up
      // to that run's lease (test/rev34c-js-slot.test.ts).
      if (!(await slotFree())) return { ...disposition, delayMs: 0, localRun: undefined };
      disposition = await processor.process(message, bounds);
    }
    return disposition;
  }

  /**
   * Waits for a slot of `concurrency` (answers false once stopped): the duplicates whose hold
   * ended queue in turn, each let through once the handlers running (neither held nor
   * queued) and those ahead of it leave it a slot. The loop takes no message meanwhile (it
   * counts them all). Counting every queued one as running instead, more of them than
   * `concurrency` waited for each other for ever (holds are taken again meanwhile).
   */
  async function slotFree(): Promise<boolean> {
    const me = {};
    slotQueue.push(me);
    // One ahead that counted this duplicate as running (its hold just ended) may go now.
    wakeSlotWaiters();
    try {
      for (;;) {
        if (stopped) return false;
        const running = inFlight.size - localHolds.size - slotQueue.length;
        if (running + slotQueue.indexOf(me) < concurrency) return true;
        await new Promise<void>((resolve) => {
          const wake = () => {
            slotWaiters.delete(wake);
            resolve();
          };
          slotWaiters.add(wake);
        });
      }
    } finally {
      slotQueue.splice(slotQueue.indexOf(me), 1);
    }
  }
  /** Wakes the duplicates waiting for a slot (see slotFree) to count again. */
  function wakeSlotWaiters(): void {
    for (const wake of [...slotWaiters]) wake();
  }

  /**
   * Waits `ms` ('elapsed'), or until `run` settles (its disposition), or until stop()
   * ('released'). Not counted against `concurrency` meanwhile: the loop may take another message.
   */
  function holdForRun(
    ms: number,
    run: Promise<Disposition>,
  ): Promise<Disposition | 'elapsed' | 'released'> {
    return new Promise((resolve) => {
      const finish = (value: Disposition | 'elapsed' | 'released') => {
        clearTimeout(timer);
        if (!localHolds.delete(release)) return; // already ended
        resolve(value);
        wakeLoop?.();
      };
      const release = () => finish('released');
      const timer = setTimeout(() => finish('elapsed'), Math.min(ms, MAX_TIMER_MS));
      timer.unref?.();
      localHolds.add(release);
      // Its slot is free for another message, or for a duplicate waiting for one (see
      // slotFree: woken only by a task's end, it waited for the next one to end, the loop
      // blocked behind it, test/rev34c-js-slot.test.ts).
      wakeSlotWaiters();
      wakeLoop?.();
      run.then(finish, release);
    });
  }

  /** `nak`s `message` once the pull's subscription has ended, at least GIVE_BACK_DELAY_MS on. */
  function giveBackAfterPull(message: TMessage, delayMs: number): void {
    const delay = Math.max(GIVE_BACK_DELAY_MS, Math.ceil(delayMs));
    if (!pullEnded) {
      late.push([message, delay]);
      return;
    }
    try {
      message.nak(delay);
    } catch {
      // a closed connection: JetStream redelivers after ack_wait
    }
  }

  let stopped = false;
  // The duplicates held until a local run of their key ends (see settleLocally): what ends each hold.
  const localHolds = new Set<() => void>();
  // Held duplicates whose hold ended, waiting for a slot before asking the store again, in
  // turn (see slotFree), and what wakes each to count again.
  const slotQueue: object[] = [];
  const slotWaiters = new Set<() => void>();
  // Set while the loop waits for a handler slot; stop() calls it so the loop reads on at once.
  // (A wait of its own each time: a race with one promise pending until stop() would keep a
  // reaction per message for as long as the consumer runs.)
  let wakeLoop: (() => void) | undefined;
  // What arrived once stopped, or was given back once stopped, with the delay of its `nak`:
  // given back when the pull's subscription has ended.
  const late: Array<[TMessage, number]> = [];
  let pullEnded = false;
  // Whether the current pull has delivered a message (it works: see the loop's waits).
  let delivered = false;
  /** Takes the pull's messages until it ends (stop(), or the broker / connection ended it). */
  async function pump(pulled: ConsumerMessagesLike<TMessage>): Promise<void> {
    // nats.js 2.x leaves the pull's iteration pending for ever when the connection is closed
    // (the application closed it without stop(), or it gave up reconnecting): ended here, so
    // the consumer says it has ended rather than wait for nothing.
    const unwatch = whenClosed(connectionOf(pulled), () => {
      if (!stopped && messages === pulled) pulled.stop();
    });
    try {
      await pumpMessages(pulled);
    } finally {
      pulledEnded.add(pulled);
      unwatch();
    }
  }

  async function pumpMessages(pulled: ConsumerMessagesLike<TMessage>): Promise<void> {
    watchStatus(pulled);
    for await (const message of pulled) {
      delivered = true;
      // A message while the broker's consumer was gone: asked whether it exists again (see
      // confirmConsuming). Not proof by itself: nats.js pulls ahead of the loop and keeps what it
      // received in its iterator, so a message pulled before the deletion is yielded after it,
      // once a slot frees (`resumed` was told then, the consumer still missing). A consumer
      // without `info()` has no other proof.
      if (life.isLost) {
        if (typeof consumer.info === 'function') confirmConsuming(pulled);
        else life.resumed();
      }
      // A slot first, checked once the message is here rather than before it came: a held
      // duplicate whose hold ended meanwhile may have taken the slot that was free (see
      // slotFree), and the message was handled beside it, one more than `concurrency`
      // (test/rev34c-js-slot.test.ts). Also the first message of a pull consumed again.
      await slotForMessage();
      // nats.js goes on yielding what it had already pulled after the pull is stopped: once
      // stopped, none of it reaches a handler (stop() would not wait for it, and a process
      // that exits then would kill it mid-handler). It is given back once the subscription
      // has ended, for another instance (see GIVE_BACK_DELAY_MS): a `nak` sent earlier could
      // have the server redeliver it to this instance's own pull, still open, and the message
      // would be dropped with the subscription (ack-pending until `ack_wait`).
      if (stopped) {
        giveBackAfterPull(message, GIVE_BACK_DELAY_MS);
        continue;
      }
      const task = handle(message)
        .catch(() => {}) // a broker call on a closed connection: JetStream redelivers
        .finally(() => {
          inFlight.delete(task);
          wakeSlotWaiters();
          wakeLoop?.();
        });
      inFlight.add(task);
      // Once stopped, the loop no longer waits for a slot: what nats.js pulled behind the
      // running handlers is given back when the drain ends, not when a long handler ends (a
      // stop() that timed out on one, then a process that exits, left it to ack_wait). Woken
      // by the task that frees a slot (its `finally`), not by a race of the tasks in flight:
      // each race left a reaction on every task still running, and a handler that runs long
      // (up to `maxHoldMs`, an hour by default) kept one per message the other slots took
      // meanwhile (test/conslate2-jetstream-memory.test.ts).
      await slotForMessage();
    }
  }

  /**
   * Waits until a slot of `concurrency` is free for the loop's next message, or stop(). A
   * duplicate held for a local run (see settleLocally) takes no slot; one waiting for a slot
   * to ask the store again (see slotFree) counts as running, and goes first.
   */
  async function slotForMessage(): Promise<void> {
    while (!stopped && inFlight.size - localHolds.size >= concurrency) {
      await new Promise<void>((resolve) => {
        wakeLoop = resolve;
      });
      wakeLoop = undefined;
    }
  }

  /**
   * Reports the broker's consumer (or stream) deleted under the pull, and its return. nats.js
   * 2.x does not end the pull then: it checks every `expires` whether the consumer exists
   * again and pulls on once it does; before this, nothing told the application meanwhile.
   */
  function watchStatus(pulled: ConsumerMessagesLike<TMessage>): void {
    if (typeof pulled.status !== 'function') return;
    void (async () => {
      const events = await pulled.status?.();
      if (events === undefined) return;
      for await (const event of events) {
        if (stopped) return;
        if (GONE_EVENTS.has(event.type)) {
          if (!life.isLost)
            life.lost(
              new ConsumerLostError(
                `The JetStream consumer is gone (${event.type}: it, or its stream, was deleted): nothing is consumed until it exists again, which is checked every expiresMs (the pull resumes then by itself)`,
              ),
              true,
            );
        } else if (
          event.type === 'next' &&
          life.isLost &&
          ((event.data as { batch?: number } | undefined)?.batch ?? 0) > 0
        )
          confirmConsuming(pulled); // nats.js pulls again: does the consumer exist?
      }
    })().catch(() => {});
  }

  // The pull a check of confirmConsuming is under way for (one at a time per pull).
  let confirming: object | undefined;
  /**
   * Tells `resumed` once the consumer is seen to exist again while `pulled` is the pull: a
   * fresh `consumer.info()` (a call to the server) answers. Before, `resumed` was told as soon
   * as consume() answered (it answers before its pull request is sent, the consumer there or
   * not) or nats.js sent a pull request (it sends some right after a `consumer_deleted`): told
   * while nothing could be received. A message that arrives is proof too (see pumpMessages);
   * a consumer without `info()` is told resumed by that only.
   */
  function confirmConsuming(pulled: ConsumerMessagesLike<TMessage>): void {
    if (confirming === pulled || typeof consumer.info !== 'function') return;
    confirming = pulled;
    void (async () => {
      try {
        await consumer.info?.(false);
        if (!stopped && messages === pulled && !pulledEnded.has(pulled)) life.resumed();
      } catch {
        // Not there (yet): nats.js checks again, and its next pull request asks again.
      } finally {
        if (confirming === pulled) confirming = undefined;
      }
    })();
  }
  // The pulls that have ended (a confirmation answered after its pull's end tells nothing).
  const pulledEnded = new WeakSet<object>();

  const loop = (async () => {
    for (let attempt = 0; ; ) {
      let failure: unknown;
      const pullStarted = performance.now();
      delivered = false;
      try {
        await pump(messages);
      } catch (error) {
        failure = error;
      }
      if (stopped) return;
      // The waits grow while the pulls consumed again end without having worked: nats.js's
      // consume() answers before its pull request is sent, so its answer proves nothing (a
      // pull refused at every request was consumed again every second, for ever, 'lost' and
      // 'resumed' told each time). A pull that delivered, or lasted the longest wait, worked.
      if (delivered || performance.now() - pullStarted >= RESUBSCRIBE_MAX_MS) attempt = 0;
      // The pull ended by itself (nats.js ended it: a bad request, a resource it gave up on,
      // the connection closed): before this the consumer went quietly dead. It is said, and
      // consumed again, at growing intervals (1 s to 30 s), as long as the connection is open.
      const closedForGood =
        (failure as { code?: unknown } | undefined)?.code === 'CONNECTION_CLOSED' ||
        isClosed(messages);
      life.lost(
        new ConsumerLostError(
          closedForGood
            ? 'The JetStream pull ended: its connection is closed; create the consumer again on a new connection'
            : 'The JetStream pull ended without stop(): it is started again at growing intervals (1 s to 30 s) while the connection is open',
          { cause: failure },
        ),
        !closedForGood,
      );
      if (closedForGood) return;
      for (;;) {
        await abortableDelay(Math.min(1_000 * 2 ** attempt, RESUBSCRIBE_MAX_MS), stopping.signal);
        if (stopped) return;
        attempt = Math.min(attempt + 1, 10);
        try {
          messages = await consumer.consume(pullOptions);
          if (stopped) {
            stopPulling(messages);
            return;
          }
          // Not `resumed` yet: nats.js's consume() answers before its pull request is even sent,
          // whether the consumer exists or not (see confirmConsuming).
          confirmConsuming(messages);
          break;
        } catch (error) {
          if ((error as { code?: unknown }).code === 'CONNECTION_CLOSED') {
            // Told too (the last status said it was resubscribing), not only `closed`.
            life.lost(
              new ConsumerLostError(
                'The JetStream pull ended and its connection is closed: create the consumer again on a new connection',
                { cause: error },
              ),
              false,
            );
            return;
          }
        }
      }
    }
  })()
    .catch(() => {
      // Unacked messages are redelivered by JetStream.
    })
    .finally(giveBackLate);

  /** The pull has ended (or was ended by stop()): what waited for it is given back now. */
  function giveBackLate(): void {
    pullEnded = true;
    for (const [message, delay] of late.splice(0)) {
      try {
        message.nak(delay);
      } catch {
        // a closed connection: JetStream redelivers after ack_wait
      }
    }
  }

  return {
    async stop(timeoutMs = 30_000) {
      checkStopTimeout(timeoutMs);
      if (!stopped) {
        stopped = true;
        stopping.abort();
        for (const release of [...localHolds]) release();
        wakeSlotWaiters();
        wakeLoop?.();
        stopPulling(messages);
      }
      // The messages given back at their maxHoldMs whose acquisition is still unanswered too,
      // and then the final writes the engine still retries in the background, those of the
      // handlers that ended meanwhile included (see settledThenWritten).
      await settledThenWritten([loop, ...inFlight, processor.idle()], processor, timeoutMs);
      // Past this no handler of this consumer starts (closed at `timeoutMs`, not a tick of the
      // loop later): one whose acquisition is answered later is given back, its key released.
      processor.close();
      // The broker has not answered the drain within `timeoutMs`: the pull is ended here
      // rather than when the drain ends, and what waits for it is given back now. A process
      // that exits once stop() returned (the usual shutdown: stop, close the connection)
      // otherwise never sent those `nak`s, and each message came back only at `ack_wait`.
      // Unsubscribed (the UNSUB the drain sent comes first on the connection), the pull gets
      // nothing more, so no redelivery of these `nak`s can reach it; what the server sent it
      // in the last round trip before the stop and that had not arrived yet is dropped by
      // the client and comes back at `ack_wait`, as after a crash.
      if (!pullEnded) {
        messages.stop();
        // nats.js yields what it had queued, then ends: a few microtasks.
        await settleWithin([loop], 0);
        giveBackLate();
      }
      // The releases of keys granted to acquisitions still unanswered: at most storeTimeoutMs
      // more (see releasedAfterClose).
      await releasedAfterClose(processor);
      life.end();
    },
    get inFlight() {
      return inFlight.size;
    },
    closed: life.closed,
  };
}
