// rev20 (mutation audit): the README says "While a JetStream handler runs, `msg.working()` is
// sent every `workingIntervalMs` so `ack_wait` does not pass". No test failed when that
// heartbeat was never sent (the one test of a handler longer than ack_wait sets the interval
// past it on purpose), nor when it was never stopped (an acked message heartbeating forever: a
// timer per message, for the life of the process). Checked here on the real NATS JetStream.
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { consumeJetStream } from '../src/index.js';
import { durableStream, jetStreamBed } from './brokers.js';

describe('rev20 consumers: the JetStream working() heartbeat', () => {
  const bed = jetStreamBed('rev20-working');
  const { redis, prefix, streams } = bed;

  it('is sent while a handler longer than ack_wait runs (no redelivery), and stops once it ends', {
    timeout: 25_000,
  }, async () => {
    // ack_wait 2 s, a handler of 4 s, working() every 250 ms: the server never redelivers. (A
    // 2 s ack_wait leaves room for the event loop being held up under CI's load: a heartbeat
    // would have to come 1.75 s late for a redelivery.)
    const stream = await durableStream(bed.nc, 'REV20_WORKING', streams, {
      ackWaitMs: 2_000,
      count: 1,
    });
    const statuses: string[] = [];
    let runs = 0;
    let heartbeats = 0;
    const consumer = await consumeJetStream({
      store: createRedisStore({ client: redis, keyPrefix: prefix }),
      consumer: await bed.nc.jetstream().consumers.get(stream, 'w'),
      // Room for a redelivery to be taken while the first delivery runs.
      concurrency: 2,
      workingIntervalMs: 250,
      retryDelayMs: 100,
      handler: async (message) => {
        runs += 1;
        // Counts the consumer's working() calls on this delivery (and still sends them).
        const working = message.working.bind(message);
        message.working = () => {
          heartbeats += 1;
          working();
        };
        await sleep(4_000);
        return 'done';
      },
      onMessage: (r) => statuses.push(r.status),
    });
    try {
      const deadline = performance.now() + 10_000;
      while (!statuses.includes('processed') && performance.now() < deadline) await sleep(20);
      const atEnd = heartbeats;
      // A redelivery sent at ack_wait would have arrived by now; a heartbeat left running
      // would have fired 4 more times.
      await sleep(1_000);
      expect(statuses).toEqual(['processed']);
      expect(runs).toBe(1);
      expect(atEnd).toBeGreaterThanOrEqual(5);
      expect(heartbeats).toBe(atEnd);
      const info = await (await bed.nc.jetstreamManager()).consumers.info(stream, 'w');
      expect(info.num_redelivered).toBe(0);
      expect(info.num_ack_pending).toBe(0);
      expect(info.num_pending).toBe(0);
    } finally {
      await consumer.stop(5_000);
    }
  });
});
