// consrev3: stop() waits for the final writes the engine retries in the background
// (engine.drain()). Each consumer has an engine of its own: one consumer's stop() neither
// waits for another's pending write (a stop(Infinity) would otherwise hang for as long as the
// other's store fails, up to its maxHoldMs) nor cuts it short; the other's stop() waits for it.
import { createRedisStore } from '@idem/store-redis';
import { expect, it } from 'vitest';
import type { IdempotentConsumer, MessageReport } from '../src/index.js';
import { amqpQueues, rabbitBench, redisBed } from './brokers.js';
import { until, writeOutage } from './late-store.js';
import { within } from './silent-proxy.js';

const { redis, prefix } = redisBed('consrev3-iso');
const queues = amqpQueues();

it('RabbitMQ: a consumer stop(Infinity) is not held by another consumer’s final write retried in the background, which the other’s stop() lands', {
  timeout: 30_000,
}, async () => {
  const benchA = await rabbitBench(queues, 'consrev3-iso-a');
  const benchB = await rabbitBench(queues, 'consrev3-iso-b');
  try {
    let writesBack = false;
    const outage = writeOutage(
      createRedisStore({ client: redis, keyPrefix: prefix }),
      () => writesBack,
    );
    const seenB: string[] = [];
    const b: IdempotentConsumer = await benchB.start(outage.store, {
      completionWaitMs: 100,
      retryDelayMs: 60_000,
      onMessage: (r: MessageReport<unknown>) => seenB.push(r.status),
    });
    const seenA: string[] = [];
    const a: IdempotentConsumer = await benchA.start(
      createRedisStore({ client: redis, keyPrefix: prefix }),
      { onMessage: (r: MessageReport<unknown>) => seenA.push(r.status) },
    );
    await benchA.publish();
    await benchB.publish();
    // B's handler ran, its write failed and is retried in the background.
    expect(
      await until(() => seenA.length > 0 && seenB.length > 0 && outage.refusedWrites > 0, 10_000),
    ).toBe(true);
    expect([seenA, seenB]).toEqual([['processed'], ['failed']]);
    // A's stop(Infinity) is not held by B's write (which never lands while writes fail).
    expect(await within(a.stop(Number.POSITIVE_INFINITY), 10_000)).not.toBe('timeout');
    expect(outage.landed).toBe(false);
    // B's own stop() waits for it: the store takes writes again, and it lands before B's stop resolves.
    writesBack = true;
    expect(await within(b.stop(10_000), 15_000)).not.toBe('timeout');
    expect(outage.landed).toBe(true);
  } finally {
    await benchA.close();
    await benchB.close();
  }
});
