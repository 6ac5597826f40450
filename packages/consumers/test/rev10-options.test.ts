// Review round 10 (rev10a): consumer options past Node's longest timer, on the real NATS
// JetStream and Redis. Findings are `it.fails` (they state the correct behaviour); attacks
// that held are plain `it`.
import { setTimeout as sleep } from 'node:timers/promises';
import { isIdemError } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { AckPolicy, type Consumer, type JsMsg } from 'nats';
import { describe, expect, it } from 'vitest';
import { consumeJetStream, type JetStreamConsumerLike } from '../src/index.js';
import { jetStreamBed } from './brokers.js';

const bed = jetStreamBed('rev10a-consumers-opt');
const { redis, prefix } = bed;

/** The real pull consumer, its messages' `working()` calls counted (they still reach NATS). */
function countingWorking(consumer: Consumer): {
  consumer: JetStreamConsumerLike<JsMsg>;
  count: () => number;
} {
  let calls = 0;
  return {
    count: () => calls,
    consumer: {
      async consume(options) {
        const messages = await consumer.consume(options);
        return {
          stop: () => messages.stop(),
          async *[Symbol.asyncIterator]() {
            for await (const m of messages) {
              const working = m.working.bind(m);
              m.working = () => {
                calls++;
                working();
              };
              yield m;
            }
          },
        };
      },
    },
  };
}

async function streamWithOneMessage(): Promise<{ stream: string; consumer: Consumer }> {
  const { jsm, name: stream, js } = await bed.stream();
  await jsm.consumers.add(stream, { durable_name: 'c', ack_policy: AckPolicy.Explicit });
  await js.publish(`${stream}.a`, new TextEncoder().encode('{"n":1}'));
  return { stream, consumer: await js.consumers.get(stream, 'c') };
}

describe('rev10a consumers: options past the longest timer', () => {
  // FIXED (was FINDING MEDIUM): workingIntervalMs past 2^31-1 ms (e.g. 2**31, or MAX_SAFE_INTEGER to "turn it off") passes the check, and setInterval clamps it to 1 ms: working() is sent to NATS about every millisecond for as long as a handler runs.
  it('JetStream: workingIntervalMs 2^31 is refused (or at least never sends working() every ms)', async () => {
    const { consumer } = await streamWithOneMessage();
    const counted = countingWorking(consumer);
    let done!: () => void;
    const handled = new Promise<void>((resolve) => {
      done = resolve;
    });
    let refused = false;
    try {
      const running = await consumeJetStream({
        store: createRedisStore({ client: redis, keyPrefix: prefix }),
        consumer: counted.consumer,
        workingIntervalMs: 2 ** 31,
        handler: async () => {
          await sleep(300);
          return { ok: true };
        },
        onMessage: () => done(),
      });
      await Promise.race([handled, sleep(10_000)]);
      await running.stop(2_000);
    } catch (error) {
      refused = isIdemError(error, 'INVALID_INPUT');
    }
    // Expected: InvalidInputError at creation (as for 0, NaN and negatives, and as core does
    // for leaseMs past 2^31-1), or no working() during a 300 ms handler. Observed: about 250
    // working() calls in 300 ms (TimeoutOverflowWarning: "Timeout duration was set to 1").
    expect(refused || counted.count() <= 1, `working() calls: ${counted.count()}`).toBe(true);
  });

  it('held: retryDelayMs and leaseMs past 2^31-1 ms are typed errors before any broker call', async () => {
    const { consumer } = await streamWithOneMessage();
    for (const bad of [{ retryDelayMs: 2 ** 31 }, { leaseMs: 2 ** 31 }]) {
      await expect(
        consumeJetStream({
          store: createRedisStore({ client: redis, keyPrefix: prefix }),
          consumer,
          handler: async () => 1,
          ...bad,
        }),
      ).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    }
  });
});

describe('rev10a consumers: ephemeral consumer names in the default scope', () => {
  // FIXED (was FINDING MEDIUM): the default JetStream scope includes info.consumer, which is random per instance for an ordered (ephemeral) consumer: after a restart the same stream messages are delivered again under a new scope and every handler runs a second time.
  it('JetStream ordered consumer: a restarted process re-reading the stream replays, never runs a message twice', async () => {
    const { name: stream, js } = await bed.stream();
    for (let i = 0; i < 3; i++)
      await js.publish(`${stream}.a`, new TextEncoder().encode(JSON.stringify({ i })));
    const store = createRedisStore({ client: redis, keyPrefix: prefix });
    const runs: number[] = [];
    const statuses: string[] = [];
    const names = new Set<string>();
    // One "process": an ordered consumer (js.consumers.get(stream) without a name) read to
    // the end of the stream, then stopped.
    // Without a scope such a consumer is refused (its name changes at every start).
    await expect(
      consumeJetStream({ store, consumer: await js.consumers.get(stream), handler: async () => 1 }),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    async function processOnce(): Promise<void> {
      let seen = 0;
      const consumer = await consumeJetStream({
        store,
        scope: ['rev10a-app', stream],
        consumer: await js.consumers.get(stream),
        handler: async (message) => {
          runs.push((JSON.parse(new TextDecoder().decode(message.data)) as { i: number }).i);
          return { ok: true };
        },
        onMessage: (r) => {
          statuses.push(r.status);
          names.add(r.message.info.consumer);
          seen++;
        },
      });
      const until = performance.now() + 10_000;
      while (seen < 3 && performance.now() < until) await sleep(25);
      await consumer.stop(2_000);
    }
    await processOnce();
    expect(runs).toEqual([0, 1, 2]);
    await processOnce(); // the process restarted: the ordered consumer reads the stream again
    // The second reading is answered from the records ('replayed'), no handler runs again.
    // Before the fix (default scope): runs [0, 1, 2, 0, 1, 2], statuses all 'processed': the
    // two consumers had two random names, so two scopes.
    expect(names.size).toBe(2);
    expect(statuses.slice(3)).toEqual(['replayed', 'replayed', 'replayed']);
    expect(runs).toEqual([0, 1, 2]);
  });
});
