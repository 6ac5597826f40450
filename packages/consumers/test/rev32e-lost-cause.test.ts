// rev32e: with `openChannel` the consumer listens to its channels' `error` (so that a channel
// error does not crash the process), and the application, which no longer sees that event,
// got a `lost` status saying only "the connection was lost, or the broker closed the channel".
// Why the broker closed it (a delivery held past its consumer_timeout, a precondition failed)
// is now the cause of the ConsumerLostError. On the real RabbitMQ and Redis.
import { createRedisStore } from '@idem/store-redis';
import { expect, it } from 'vitest';
import { reconnectBench } from './amqp32-proxy.js';
import { amqpQueues, redisBed } from './brokers.js';
import { until } from './late-store.js';

const queues = amqpQueues();
const bed = redisBed('rev32e-cause');

it("a channel the broker closed with an error: the 'lost' status carries that error as its cause, and it resumes", {
  timeout: 20_000,
}, async () => {
  const bench = await reconnectBench(queues, 'rev32e-cause');
  const { consumer, statuses, types, runs } = await bench.start(
    createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
    { reconnectDelayMs: 50, reconnectMaxDelayMs: 200 },
  );
  try {
    // A channel error: an ack of a delivery tag the channel never gave (406 PRECONDITION_FAILED).
    bench.opener.log.channels[0]?.ack({ fields: { deliveryTag: 999 } } as never);
    expect(await until(() => types().length === 2, 10_000)).toBe(true);
    expect(types()).toEqual(['lost', 'resumed']);
    const lost = statuses[0] as { error: Error & { cause?: unknown } };
    expect(lost.error.cause).toBeInstanceOf(Error);
    expect(String((lost.error.cause as Error).message)).toMatch(
      /PRECONDITION|unknown delivery tag/i,
    );
    bench.publish('after');
    expect(await until(() => runs.length === 1, 10_000)).toBe(true);
  } finally {
    await consumer.stop(5_000);
  }
  expect(bench.opener.openChannels()).toEqual([]);
  await bench.close();
});
