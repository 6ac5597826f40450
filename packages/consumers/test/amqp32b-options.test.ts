// amqp32b, no broker needed (fake channels, the real Redis store):
// - `reconnectDelayMs` above 30 s alone was refused, the error naming `reconnectMaxDelayMs`,
//   an option the user had not set: the longest wait now follows it.
// - a message delivered on an attempt given up at `openChannelTimeoutMs` after its consume came
//   through, whose handler failed, was held `retryDelayMs` on a channel already closed (the
//   session no longer watched, so never `ended`): it is given back at once now.
import { EventEmitter } from 'node:events';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { type AmqpChannelLike, type AmqpMessageLike, consumeAmqp } from '../src/index.js';
import { redisBed, uniqueName } from './brokers.js';
import { until } from './late-store.js';

const bed = redisBed('amqp32b-options');
const store = () => createRedisStore({ client: bed.redis, keyPrefix: bed.prefix });

/** A channel that consumes at once and records what is acked and nacked. */
function fakeChannel(consume?: AmqpChannelLike['consume']) {
  const events = new EventEmitter();
  const log = { acked: [] as string[], nacked: [] as string[], closed: false };
  const channel: AmqpChannelLike = {
    prefetch: async () => undefined,
    consume: consume ?? (async () => ({ consumerTag: 'ok' })),
    cancel: async () => undefined,
    ack: (message) => log.acked.push(String(message.properties.messageId)),
    nack: (message) => log.nacked.push(String(message.properties.messageId)),
    once: (event, listener) => events.once(event, listener),
    removeListener: (event, listener) => events.removeListener(event, listener),
    on: () => undefined,
    close: async () => {
      log.closed = true;
    },
  };
  return { channel, log, events };
}

describe('amqp32b: reconnect options', () => {
  it('reconnectDelayMs above 30 s alone is taken (the longest wait follows it)', async () => {
    const consumer = await consumeAmqp({
      store: store(),
      openChannel: async () => fakeChannel().channel,
      queue: 'amqp32b-delay',
      reconnectDelayMs: 60_000,
      handler: async () => 'ok',
    });
    await consumer.stop(1_000);
  });

  it('a longest wait below the first names both, with their values', async () => {
    await expect(
      consumeAmqp({
        store: store(),
        openChannel: async () => fakeChannel().channel,
        queue: 'amqp32b-delay',
        reconnectDelayMs: 500,
        reconnectMaxDelayMs: 100,
        handler: async () => 'ok',
      }),
    ).rejects.toThrow('reconnectMaxDelayMs (100) must be at least reconnectDelayMs (500)');
  });
});

describe('amqp32b: an attempt given up after its consume came through', () => {
  it('its failed message is given back at once, not held retryDelayMs on the closed channel', {
    timeout: 15_000,
  }, async () => {
    const id = uniqueName('abandoned-msg');
    const first = fakeChannel();
    // The second attempt: a message is delivered as the consume is made, and the consume-ok
    // comes after openChannelTimeoutMs (the attempt is given up meanwhile).
    const second = fakeChannel(async (_queue, onMessage) => {
      onMessage({
        content: new Uint8Array([1]),
        fields: { deliveryTag: 1, redelivered: false },
        properties: { messageId: id },
      } as AmqpMessageLike);
      await new Promise((resolve) => setTimeout(resolve, 400));
      return { consumerTag: 'late' };
    });
    const channels = [first, second];
    let started = false;
    const consumer = await consumeAmqp({
      store: store(),
      openChannel: async () => (channels.shift() ?? fakeChannel()).channel,
      queue: 'amqp32b-abandoned',
      reconnectDelayMs: 10,
      openChannelTimeoutMs: 150,
      retryDelayMs: 60_000,
      handler: async () => {
        started = true;
        // Fails once the attempt has been given up (at 150 ms).
        await new Promise((resolve) => setTimeout(resolve, 400));
        throw new Error('handler failed');
      },
    });
    first.events.emit('close');
    expect(await until(() => started, 5_000)).toBe(true);
    expect(await until(() => second.log.closed, 5_000)).toBe(true);
    // Given back once the handler failed, well before the 60 s retryDelayMs (bounded wait).
    expect(await until(() => second.log.nacked.includes(id), 5_000)).toBe(true);
    expect(second.log.acked).toEqual([]);
    await consumer.stop(1_000);
  });
});
