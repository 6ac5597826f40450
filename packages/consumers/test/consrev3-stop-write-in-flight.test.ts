// consrev3: stop() waits for the final writes the engine retries in the background
// (consrev2), but it asked the engine's drain at the same time as it waited for the handlers in
// flight. A handler still running when stop() was called had no write pending then: the drain
// found nothing and resolved at once. The handler ended, its write failed (a store outage) and
// went to the background, the message went back, and stop() resolved with that write still
// being retried: the application closed the store's connection, the write never landed, and the
// redelivery ran the handler a second time once the lease had passed. Now the drain is asked
// once the handlers in flight have ended. Ordered by events: the handler ends only once stop()
// was called; the store refuses the write until the message is given back (nothing in flight),
// and everything once stop() resolved (the application closed its connection).

import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { expect, it } from 'vitest';
import type { IdempotentConsumer, MessageReport } from '../src/index.js';
import {
  amqpQueues,
  anotherInstance,
  type Bench,
  connectAmqp,
  jetStreamBed,
  jetStreamBench,
  rabbitBench,
} from './brokers.js';
import { until, writeOutage } from './late-store.js';
import { within } from './silent-proxy.js';

const bed = jetStreamBed('consrev3-inflight');
const queues = amqpQueues();

/**
 * RabbitMQ: the consumer's stop() asked the drain once the broker answered the cancel, so the
 * handler ends after that answer (a channel of the test's, its `cancel` observed).
 */
async function rabbit(): Promise<{ bench: Bench; afterStop: () => Promise<void> }> {
  const bench = await rabbitBench(queues, 'consrev3-inflight');
  const connection = await connectAmqp();
  const channel = await connection.createChannel();
  let answered: () => void = () => {};
  const cancelAnswered = new Promise<void>((resolve) => {
    answered = resolve;
  });
  const cancel = channel.cancel.bind(channel);
  channel.cancel = async (tag: string) => {
    const answer = await cancel(tag);
    answered();
    return answer;
  };
  return {
    bench: {
      ...bench,
      start: (store, options) => bench.start(store, { channel, ...options }),
      close: async () => {
        await connection.close().catch(() => undefined);
        await bench.close();
      },
    },
    // Only to have the old source fail (its drain came a turn after the answer); the fixed
    // one passes whenever the handler ends.
    afterStop: async () => {
      await cancelAnswered;
      await sleep(50);
    },
  };
}

for (const [name, open] of [
  ['RabbitMQ', rabbit],
  [
    'NATS JetStream',
    async () => ({
      bench: await jetStreamBench(bed.nc, bed.streams, 'consrev3i'),
      // The old source asked the drain as stop() was called.
      afterStop: async () => {},
    }),
  ],
] as const) {
  it(`${name}: a handler in flight at stop() whose final write then goes to the background: the write lands before stop() resolves; the redelivery replays`, {
    timeout: 30_000,
  }, async () => {
    const { bench, afterStop } = await open();
    try {
      let consumer: IdempotentConsumer | undefined;
      const outage = writeOutage(
        createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
        () => consumer?.inFlight === 0,
      );
      const { store } = outage;
      const runs: string[] = [];
      const seen: string[] = [];
      let started = false;
      let finish: (() => void) | undefined;
      const finishing = new Promise<void>((resolve) => {
        finish = resolve;
      });
      consumer = await bench.start(store, {
        // The handler's caller waits 100 ms for the write, then the message goes back (at
        // once on RabbitMQ, the consumer stopping; a `nak` of 500 ms on JetStream) while the
        // engine retries the write.
        completionWaitMs: 100,
        retryDelayMs: 500,
        handler: async () => {
          runs.push('first');
          started = true;
          await finishing;
          return 'first';
        },
        onMessage: (r: MessageReport<unknown>) => seen.push(r.status),
      });
      await bench.publish();
      expect(await until(() => started, 10_000)).toBe(true);
      // stop() is called with the handler still running: no write is pending yet.
      const stopping = consumer.stop(10_000);
      await afterStop();
      finish?.();
      expect(await within(stopping, 15_000)).not.toBe('timeout');
      const landedAtStop = outage.landed;
      // The application closes the store's connection.
      outage.closed = true;
      expect([seen, runs]).toEqual([['failed'], ['first']]);
      expect(outage.refusedWrites).toBeGreaterThan(0);
      // Before the fix: false (the write was still being retried; it never landed after).
      expect(landedAtStop).toBe(true);
      // Another instance replays the redelivery: the handler never runs again.
      const { statuses, runs: second } = await anotherInstance(
        bench,
        createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
      );
      expect([statuses, second, runs]).toEqual([['replayed'], [], ['first']]);
    } finally {
      await bench.close();
    }
  });
}
