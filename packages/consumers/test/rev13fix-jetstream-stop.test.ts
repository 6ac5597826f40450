// rev13fix review of the rev13 JetStream stop() fix, with the consumer's usual ack_wait (30 s):
// the rev13 test used a 2 s ack_wait, which hides a message that only comes back at ack_wait.
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { consumeJetStream } from '../src/index.js';
import { durableStream, jetStreamBed } from './brokers.js';

describe('rev13fix consumers: JetStream stop() gives back what it did not run', () => {
  const bed = jetStreamBed('rev13fix-js');
  const { redis, prefix, streams } = bed;

  // FIXED (was FINDING LOW): stop() called nats.js's `messages.stop()`, which unsubscribes the
  // pull's inbox while the server may still be sending the batch it pulled (max_messages =
  // 2 x concurrency): those messages were dropped on the floor, never yielded (so never nak'ed),
  // and came back only when ack_wait passed (30 s by default), each having spent a delivery of
  // max_deliver (seen: 4 of 8 messages, 3 of 3 runs). A nak sent while the pull was still open
  // lost messages the same way: the server redelivered at once to this instance's own open
  // pull (seen: 1 of 8, 1 run in 6 with the drain alone).
  // Fix: stop() drains the inbox subscription (UNSUB, then a PING/PONG) so what the server sent
  // before the UNSUB is received, and naks what arrived once stopped only after the
  // subscription has ended, with a 250 ms delay (sent at once, a nak could still race the pull
  // requests nats.js sends after the UNSUB: 1 of 8 lost in about 1 stop of 5 mid-flow).
  // Checked at two moments, each on its own stream, three times: a stop at once (the first
  // pull in flight) and a stop mid-flow (two handlers running, re-pulls queued).
  it.each([0, 0, 0, 150, 150, 150].map((stopAfterMs, i) => ({ stopAfterMs, i })))(
    'messages in flight when stop() is called ($stopAfterMs ms after the start, #$i) go to a second instance at once, not after ack_wait',
    {
      timeout: 45_000,
    },
    async ({ stopAfterMs }) => {
      const jsm = await bed.nc.jetstreamManager();
      const js = bed.nc.jetstream();
      const stream = await durableStream(bed.nc, 'REV13FIX', streams, {
        ackWaitMs: 30_000,
        count: 8,
      });
      const store = createRedisStore({ client: redis, keyPrefix: prefix });
      const runs = new Map<number, number>();
      const seen: Array<[number, number, number]> = [];
      let running = 0;
      const t0 = performance.now();
      const handler = async (message: { data: Uint8Array; info: { redeliveryCount: number } }) => {
        const { n } = JSON.parse(Buffer.from(message.data).toString()) as { n: number };
        runs.set(n, (runs.get(n) ?? 0) + 1);
        seen.push([n, message.info.redeliveryCount, Math.round(performance.now() - t0)]);
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
        handler: handler as never,
      });
      if (stopAfterMs > 0) await sleep(stopAfterMs);
      await first.stop(10_000);
      const stoppedAt = Math.round(performance.now() - t0);
      const second = await consumeJetStream({
        store,
        consumer: await js.consumers.get(stream, 'w'),
        concurrency: 2,
        workingIntervalMs: 500,
        handler: handler as never,
      });
      // 15 s at most (half of ack_wait): a loaded machine (CI's lanes, load 24 on 2 cores)
      // took longer than 5 s to run the eight 300 ms handlers and ack them.
      const end = performance.now() + 15_000;
      while (performance.now() < end && runs.size < 8) await sleep(25);
      while (performance.now() < end && running > 0) await sleep(25);
      await second.stop(5_000);
      // Acks are published without waiting for the server's answer, and the server applies
      // them to the consumer after it read them: asked at once, a loaded server (CI's lanes)
      // answered 2 pending whose acks it had not applied yet. Asked again for up to 5 s,
      // far below ack_wait (30 s): a message that was not acked still counts as pending.
      let info = await jsm.consumers.info(stream, 'w');
      for (let tries = 0; tries < 50 && info.num_ack_pending + info.num_pending > 0; tries++) {
        await sleep(100);
        info = await jsm.consumers.info(stream, 'w');
      }
      // 15 s of waiting at most, ack_wait is 30 s: nothing came back by ack_wait.
      expect([...runs.entries()].sort((a, b) => a[0] - b[0])).toEqual(
        [1, 2, 3, 4, 5, 6, 7, 8].map((n) => [n, 1]),
      );
      expect({ ackPending: info.num_ack_pending, pending: info.num_pending }).toEqual({
        ackPending: 0,
        pending: 0,
      });
      expect(seen.every(([, , at]) => at < 15_000 + stoppedAt)).toBe(true);
    },
  );
});
