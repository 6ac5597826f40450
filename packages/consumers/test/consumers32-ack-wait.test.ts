// consumers32: a JetStream consumer whose ack_wait is shorter than the working() interval (10 s
// by default) had a long handler's message redelivered mid-run at every ack_wait: the key is
// held, so the redelivery was given back as a duplicate in progress (the handler did not run
// twice), but each spent a delivery of max_deliver and came back about once a lease. Now the
// interval is fitted to ack_wait (a third of it), and one given at or above it is refused at
// start. On the real NATS JetStream and Redis.
import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidInputError } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { consumeJetStream } from '../src/index.js';
import { durableStream, jetStreamBed } from './brokers.js';

const bed = jetStreamBed('consumers32-ackwait');

describe('consumers32: JetStream ack_wait shorter than the working() interval', () => {
  it('by default, working() is sent often enough: a 3 s handler on ack_wait 1 s is never redelivered', {
    timeout: 25_000,
  }, async () => {
    const stream = await durableStream(bed.nc, 'C32_ACKWAIT', bed.streams, {
      ackWaitMs: 1_000,
      count: 1,
    });
    const statuses: string[] = [];
    let runs = 0;
    const consumer = await consumeJetStream({
      store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
      consumer: await bed.nc.jetstream().consumers.get(stream, 'w'),
      concurrency: 2,
      retryDelayMs: 100,
      handler: async () => {
        runs += 1;
        await sleep(3_000);
        return 'done';
      },
      onMessage: (r) => statuses.push(r.status),
    });
    try {
      const deadline = performance.now() + 10_000;
      while (!statuses.includes('processed') && performance.now() < deadline) await sleep(20);
      await sleep(500);
      expect(statuses).toEqual(['processed']);
      expect(runs).toBe(1);
      const info = await (await bed.nc.jetstreamManager()).consumers.info(stream, 'w');
      expect(info.num_redelivered).toBe(0);
      expect(info.num_ack_pending).toBe(0);
    } finally {
      await consumer.stop(5_000);
    }
  });

  it('a workingIntervalMs at or above ack_wait is refused at start with InvalidInputError, nothing pulled', {
    timeout: 15_000,
  }, async () => {
    const stream = await durableStream(bed.nc, 'C32_ACKWAIT_BAD', bed.streams, {
      ackWaitMs: 1_000,
      count: 1,
    });
    let runs = 0;
    const started = consumeJetStream({
      store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
      consumer: await bed.nc.jetstream().consumers.get(stream, 'w'),
      workingIntervalMs: 1_000,
      handler: async () => {
        runs += 1;
        return 'done';
      },
    });
    const error = await started.then(
      (c) => c.stop(1_000).then(() => undefined),
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as Error).message).toMatch(
      /workingIntervalMs \(1000\) must be below .*ack_wait \(1000 ms\)/,
    );
    await sleep(300);
    expect(runs).toBe(0);
  });
});
