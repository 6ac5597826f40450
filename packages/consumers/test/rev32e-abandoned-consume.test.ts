// rev32e: an openChannel attempt given up at openChannelTimeoutMs while its prefetch was still
// pending went on to consume on the abandoned channel once the prefetch answered. amqplib's
// channel is closed by the consumer then (its prefetch fails), but a channel without `close`
// (the type makes it optional) kept a live consumer nobody cancels: every delivery nacked with
// requeue and delivered to it again, for as long as the channel lives. No broker needed.
import { createRedisStore } from '@idem/store-redis';
import { expect, it } from 'vitest';
import { type AmqpChannelLike, consumeAmqp } from '../src/index.js';
import { redisBed } from './brokers.js';

const bed = redisBed('rev32e-abandoned');

it.each([
  ['its prefetch', 300, 0],
  ['its consume', 0, 300],
])(
  'an attempt given up during %s leaves no consumer on its channel',
  {
    timeout: 10_000,
  },
  async (_, prefetchMs, consumeMs) => {
    let live = 0;
    const channel: AmqpChannelLike = {
      prefetch: () => new Promise((resolve) => setTimeout(resolve, prefetchMs)),
      consume: async () => {
        live += 1;
        await new Promise((resolve) => setTimeout(resolve, consumeMs));
        return { consumerTag: 'abandoned' };
      },
      cancel: async () => {
        live -= 1;
      },
      ack: () => {},
      nack: () => {},
    };
    await expect(
      consumeAmqp({
        store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
        openChannel: async () => channel,
        openChannelTimeoutMs: 100,
        queue: 'rev32e-abandoned',
        handler: async () => 'ok',
      }),
    ).rejects.toThrow(/openChannelTimeoutMs/);
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(live).toBe(0);
  },
);
