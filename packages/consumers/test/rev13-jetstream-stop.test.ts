// Review round 13 (rev13client): consumeJetStream's stop() on the real NATS JetStream and Redis.
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { consumeJetStream } from '../src/index.js';
import { durableStream, jetStreamBed } from './brokers.js';

describe('rev13 consumers: JetStream stop()', () => {
  const bed = jetStreamBed('rev13-js-stop');
  const { redis, prefix, streams } = bed;

  // FIXED (was FINDING MEDIUM): stop() called `messages.stop()` and waits for `[loop, ...inFlight]` as
  // they are at that moment. nats.js's iterator goes on yielding the messages it had already
  // pulled (`max_messages` is 2 × concurrency) after stop(), and the loop hands each to a new
  // handler: handlers START after stop() (seen: 3 of 8 with concurrency 2), and the last one
  // is not in the snapshot, so stop() resolves while it runs (inFlight 1). The usual shutdown,
  // `await consumer.stop(); await nc.close(); process.exit()`, then kills a handler that began
  // after the stop, mid-side-effect: the crash path (key held to the end of its lease, the
  // side effect run again by the takeover unless fenced) on every graceful restart.
  // Fix: once stopped, no message reaches a handler (each is nak'ed at once, for another
  // instance), so the tasks stop() waits for are all there are.
  it('no handler starts after stop(); none runs when it resolves; the rest run once later', {
    timeout: 25_000,
  }, async () => {
    const js = bed.nc.jetstream();
    // Short ack_wait: a message nats.js received after stop() and dropped (never yielded,
    // never nak'ed) comes back after it.
    const stream = await durableStream(bed.nc, 'REV13_STOP', streams, {
      ackWaitMs: 2_000,
      count: 8,
    });
    const store = createRedisStore({ client: redis, keyPrefix: prefix });
    const runs = new Map<number, number>();
    let running = 0;
    let stopping = false;
    let startedAfterStop = 0;
    const handler = async (message: { data: Uint8Array }) => {
      const { n } = JSON.parse(Buffer.from(message.data).toString()) as { n: number };
      runs.set(n, (runs.get(n) ?? 0) + 1);
      if (stopping) startedAfterStop += 1;
      running += 1;
      try {
        await sleep(300);
        return n;
      } finally {
        running -= 1;
      }
    };
    const first = await consumeJetStream({
      store,
      consumer: await js.consumers.get(stream, 'w'),
      concurrency: 2,
      workingIntervalMs: 500,
      handler,
    });
    const deadline = performance.now() + 5_000;
    while (performance.now() < deadline && running < 2) await sleep(10);
    stopping = true;
    await first.stop(10_000);
    const atStop = { startedAfterStop, running, inFlight: first.inFlight };
    stopping = false;
    // What the first did not run goes to a second instance, once each.
    const second = await consumeJetStream({
      store,
      consumer: await js.consumers.get(stream, 'w'),
      concurrency: 2,
      workingIntervalMs: 500,
      handler,
    });
    const end = performance.now() + 12_000;
    while (performance.now() < end && runs.size < 8) await sleep(25);
    while (performance.now() < end && running > 0) await sleep(25);
    await second.stop(5_000);
    // Before a fix: { startedAfterStop: 3, running: 1, inFlight: 1 }.
    expect(atStop).toEqual({ startedAfterStop: 0, running: 0, inFlight: 0 });
    expect([...runs.entries()].sort((a, b) => a[0] - b[0])).toEqual(
      [1, 2, 3, 4, 5, 6, 7, 8].map((n) => [n, 1]),
    );
  });
});
