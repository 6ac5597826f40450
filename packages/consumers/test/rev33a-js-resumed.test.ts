// rev33a (review of the consumers33 merge f9c5900d): JetStream `resumed` is "told once true":
// after a fresh consumer.info() answers, or when a message arrives. But nats.js pulls ahead of
// the loop (max_messages is 2 × concurrency) and keeps what it pulled in its iterator: a message
// received before the consumer was deleted is yielded after the `consumer_deleted` event, when
// the loop frees a slot. Its arrival proves nothing about the consumer now, and `resumed` was
// told while the consumer did not exist (nothing could be received). On the real NATS JetStream
// and Redis.
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { AckPolicy } from 'nats';
import { describe, expect, it } from 'vitest';
import { type ConsumerStatus, consumeJetStream } from '../src/index.js';
import { jetStreamBed } from './brokers.js';
import { until } from './late-store.js';

describe('rev33a: JetStream resumed after a consumer deleted', () => {
  const bed = jetStreamBed('rev33a-js-resumed');

  it('a message pulled before the deletion, handled after it, does not tell resumed', {
    timeout: 40_000,
  }, async () => {
    const { jsm, name, js } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    await js.publish(`${name}.a`, 'one', { msgID: 'rev33a-one' });
    await js.publish(`${name}.a`, 'two', { msgID: 'rev33a-two' });
    let finish: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const runs: string[] = [];
    const statuses: ConsumerStatus[] = [];
    const consumer = await consumeJetStream({
      store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
      consumer: await bed.nc.jetstream().consumers.get(name, 'w'),
      // One slot: the second message waits in nats.js's iterator while the first runs.
      concurrency: 1,
      expiresMs: 1_000,
      handler: async (message) => {
        runs.push(message.string());
        if (runs.length === 1) await gate;
        return 'ok';
      },
      onConsumerStatus: (s) => statuses.push(s),
    });
    try {
      expect(await until(() => runs.length === 1, 10_000)).toBe(true);
      // Both were pulled (one batch of 2): the second is in the client's hands already.
      const info = await jsm.consumers.info(name, 'w');
      expect(info.num_ack_pending).toBe(2);
      await jsm.consumers.delete(name, 'w');
      expect(await until(() => statuses.length === 1, 10_000)).toBe(true);
      expect(statuses[0]).toMatchObject({ type: 'lost', resubscribing: true });
      // The slot frees: nats.js yields the second message, pulled before the deletion.
      finish();
      expect(await until(() => runs.length === 2, 10_000)).toBe(true);
      // Room for a resumed (a wrong one at the message; nats.js's checks every expiresMs find
      // the consumer still missing).
      await sleep(2_500);
      expect(statuses.map((s) => s.type)).toEqual(['lost']);
      // Created again: now it is true, and it is told.
      await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
      expect(await until(() => statuses.length === 2, 15_000)).toBe(true);
      expect(statuses.map((s) => s.type)).toEqual(['lost', 'resumed']);
    } finally {
      finish();
      await consumer.stop(5_000);
    }
  });
});
