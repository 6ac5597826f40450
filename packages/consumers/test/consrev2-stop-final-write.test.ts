// consrev2: a handler ran while the store failed its final write. The engine keeps the outcome
// and retries the write in the background (until it lands, up to maxHoldMs: "better a late
// completion than a second execution"); the message goes back meanwhile. stop() did not wait
// for that write: it resolved, the application closed the store's connection, the write never
// landed, and once the lease passed the redelivery ran the handler a second time. Now stop()
// waits for it within its timeoutMs (the engine's drain). Ordered by events: the store takes
// the write only once stop() was called and the message was given back (nothing in flight),
// and refuses everything once stop() resolved (the application closed its connection).
import { createRedisStore } from '@idem/store-redis';
import { expect, it } from 'vitest';
import type { IdempotentConsumer, MessageReport } from '../src/index.js';
import { amqpQueues, anotherInstance, rabbitBench, redisBed } from './brokers.js';
import { until, writeOutage } from './late-store.js';
import { within } from './silent-proxy.js';

const { redis, prefix } = redisBed('consrev2-final');
const queues = amqpQueues();

it('RabbitMQ: a final write retried in the background lands before stop() resolves; the redelivery replays', {
  timeout: 30_000,
}, async () => {
  const bench = await rabbitBench(queues, 'consrev2-final');
  try {
    let consumer: IdempotentConsumer | undefined;
    let stopCalled = false;
    const outage = writeOutage(
      createRedisStore({ client: redis, keyPrefix: prefix }),
      () => stopCalled && consumer?.inFlight === 0,
    );
    const { store } = outage;
    const runs: string[] = [];
    const seen: string[] = [];
    consumer = await bench.start(store, {
      // The handler's caller waits 100 ms for the write, then the message goes back (held
      // for retryDelayMs, given back at the stop) while the engine retries the write.
      completionWaitMs: 100,
      retryDelayMs: 60_000,
      handler: async () => {
        runs.push('first');
        return 'first';
      },
      onMessage: (r: MessageReport<unknown>) => seen.push(r.status),
    });
    await bench.publish();
    expect(await until(() => seen.length > 0 && outage.refusedWrites > 0, 10_000)).toBe(true);
    expect([seen, runs]).toEqual([['failed'], ['first']]);
    stopCalled = true;
    expect(await within(consumer.stop(10_000), 15_000)).not.toBe('timeout');
    const landedAtStop = outage.landed;
    // The application closes the store's connection.
    outage.closed = true;
    // Before the fix: false (the write was still being retried; it never landed after).
    expect(landedAtStop).toBe(true);
    // Another instance replays the redelivery: the handler never runs again.
    const { statuses, runs: second } = await anotherInstance(
      bench,
      createRedisStore({ client: redis, keyPrefix: prefix }),
    );
    expect([statuses, second, runs]).toEqual([['replayed'], [], ['first']]);
  } finally {
    await bench.close();
  }
});
