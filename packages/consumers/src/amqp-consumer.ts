import { InvalidInputError, type Scope } from '@idem/core';
import { type ConsumerOptions, messageProcessor } from './message-outcome.js';

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
}

/** Options of {@link consumeAmqp}. */
export interface AmqpConsumerOptions<TMessage extends AmqpMessageLike, T>
  extends ConsumerOptions<TMessage, T> {
  /** An open amqplib channel (the caller owns it, and its connection). */
  channel: AmqpChannelLike<TMessage>;
  /** The queue to consume (it must exist). */
  queue: string;
  /** Messages in flight at once (`channel.prefetch`): an integer 1..65535. @default 10 */
  prefetch?: number;
}

/** A running consumer. */
export interface IdempotentConsumer {
  /** Stops taking messages and waits (at most `timeoutMs`) for those in flight. */
  stop(timeoutMs?: number): Promise<void>;
  /** Messages being processed or waiting to be given back. */
  readonly inFlight: number;
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
  const { channel, queue, prefetch = 10, ...rest } = options;
  // 0 is RabbitMQ's "unlimited" (every message of the queue in memory at once).
  if (!(Number.isInteger(prefetch) && prefetch >= 1 && prefetch <= 65_535))
    throw new InvalidInputError('prefetch must be an integer from 1 to 65535');
  const processor = messageProcessor<TMessage, T>(rest, {
    defaultKey: amqpMessageKey,
    body: (message) => message.content,
    defaultScope: () => ['amqp', queue] as Scope,
  });
  const inFlight = new Set<Promise<void>>();
  // Broker calls on a channel that closed meanwhile throw; the broker redelivers anyway.
  const safely = (call: () => void) => {
    try {
      call();
    } catch {
      // The channel is gone: every unacked message goes back to the queue.
    }
  };
  async function handle(message: TMessage): Promise<void> {
    const disposition = await processor.process(message);
    if (disposition.action === 'ack') return safely(() => channel.ack(message));
    if (disposition.action === 'reject') return safely(() => channel.nack(message, false, false));
    // Held unacked for the delay (it keeps its prefetch slot), then requeued.
    await new Promise((resolve) => setTimeout(resolve, disposition.delayMs));
    safely(() => channel.nack(message, false, true));
  }
  await channel.prefetch(prefetch);
  const { consumerTag } = await channel.consume(
    queue,
    (message) => {
      if (message === null) return; // the broker cancelled the consumer
      const task = handle(message).finally(() => inFlight.delete(task));
      inFlight.add(task);
    },
    { noAck: false },
  );
  let stopped = false;
  return {
    async stop(timeoutMs = 30_000) {
      if (!stopped) {
        stopped = true;
        await channel.cancel(consumerTag).catch(() => {});
      }
      await settleWithin([...inFlight], timeoutMs);
    },
    get inFlight() {
      return inFlight.size;
    },
  };
}

/** Waits for the tasks, at most `timeoutMs`. */
export async function settleWithin(tasks: Promise<unknown>[], timeoutMs: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.allSettled(tasks),
    new Promise((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    }),
  ]);
  clearTimeout(timer);
}
