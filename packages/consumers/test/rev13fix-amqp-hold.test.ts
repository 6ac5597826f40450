// rev13fix review of the rev13 consumers fixes (consumerTimeoutMs; stop()) with a scripted
// channel: no broker needed.
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { consumeAmqp } from '../src/index.js';
import { uniqueName } from './brokers.js';

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
const prefix = `${uniqueName('rev13fix-amqp')}:`;
const storeOf = () => createRedisStore({ client: redis, keyPrefix: prefix });
afterAll(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

type Msg = { content: Buffer; properties: { messageId: string }; fields: { deliveryTag: number } };

function scriptedChannel() {
  let deliver: (message: Msg | null) => void = () => {};
  const nacks: { tag: number; requeue: boolean; at: number }[] = [];
  const acks: number[] = [];
  let onCancel: () => void = () => {};
  const channel = {
    prefetch: async () => {},
    consume: async (_queue: string, callback: (message: Msg | null) => void) => {
      deliver = callback;
      return { consumerTag: 't' };
    },
    cancel: async () => {
      onCancel();
    },
    ack: (message: Msg) => acks.push(message.fields.deliveryTag),
    nack: (message: Msg, _all: boolean, requeue: boolean) =>
      nacks.push({ tag: message.fields.deliveryTag, requeue, at: performance.now() }),
  };
  const message = (tag: number, id: string): Msg => ({
    content: Buffer.from(`{"id":"${id}"}`),
    properties: { messageId: id },
    fields: { deliveryTag: tag },
  });
  return {
    channel,
    nacks,
    acks,
    deliver: (m: Msg) => deliver(m),
    message,
    set onCancel(fn: () => void) {
      onCancel = fn;
    },
  };
}

describe('rev13fix consumers: consumeAmqp holds and stop()', () => {
  it('a failure hold is cut to a third of consumerTimeoutMs when retryDelayMs is longer', {
    timeout: 10_000,
  }, async () => {
    const s = scriptedChannel();
    const consumer = await consumeAmqp({
      store: storeOf(),
      queue: 'q',
      channel: s.channel as never,
      consumerTimeoutMs: 600,
      retryDelayMs: 60_000,
      handler: async () => {
        throw new Error('fails');
      },
    });
    const at = performance.now();
    s.deliver(s.message(1, 'a'));
    const end = performance.now() + 3_000;
    while (s.nacks.length === 0 && performance.now() < end)
      await new Promise((r) => setTimeout(r, 10));
    expect(s.nacks).toHaveLength(1);
    const held = (s.nacks[0]?.at ?? 0) - at;
    expect(held).toBeGreaterThanOrEqual(150);
    expect(held).toBeLessThan(600);
    expect(s.nacks[0]?.requeue).toBe(true);
    await consumer.stop(1_000);
  });

  it('a delivery that races the cancel starts a handler, and stop() waits for it', {
    timeout: 10_000,
  }, async () => {
    const s = scriptedChannel();
    let running = 0;
    const consumer = await consumeAmqp({
      store: storeOf(),
      queue: 'q',
      channel: s.channel as never,
      handler: async () => {
        running += 1;
        await new Promise((r) => setTimeout(r, 300));
        running -= 1;
        return 'ok';
      },
    });
    s.onCancel = () => s.deliver(s.message(7, 'raced'));
    await consumer.stop(5_000);
    expect({ running, inFlight: consumer.inFlight, acks: s.acks }).toEqual({
      running: 0,
      inFlight: 0,
      acks: [7],
    });
  });
});
