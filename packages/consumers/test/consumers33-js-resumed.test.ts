// consumers33: a JetStream pull that ended by itself was consumed again and `resumed` told as
// soon as consume() answered; nats.js's consume() answers before its pull request is sent,
// whether the consumer exists or not, so `resumed` was told while nothing could be received
// (here: the consumer deleted). Now `resumed` comes once the consumer is seen to exist (a fresh
// consumer.info()) or a message arrives. On the real NATS JetStream and Redis.
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { AckPolicy } from 'nats';
import { describe, expect, it } from 'vitest';
import { type ConsumerStatus, consumeJetStream } from '../src/index.js';
import { jetStreamBed } from './brokers.js';
import { until } from './late-store.js';

describe('consumers33: JetStream resumed', () => {
  const bed = jetStreamBed('consumers33-js-resumed');

  it('is not told while the consumer consumed again does not exist; told once it does, then it processes', {
    timeout: 40_000,
  }, async () => {
    const { jsm, name, js } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    const real = await js.consumers.get(name, 'w');
    const pulls: Array<{ stop(): void }> = [];
    const consumer = {
      consume: async (options?: Parameters<typeof real.consume>[0]) => {
        const pulled = await real.consume(options);
        pulls.push(pulled);
        return pulled;
      },
      info: (cached?: boolean) => real.info(cached),
    } as unknown as typeof real;
    const statuses: ConsumerStatus[] = [];
    const runs: string[] = [];
    const idem = await consumeJetStream({
      store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
      consumer,
      expiresMs: 1_000,
      handler: async (message) => {
        runs.push(message.string());
        return 'ok';
      },
      onConsumerStatus: (s) => statuses.push(s),
    });
    try {
      // The consumer deleted, and the pull ended by itself (as nats.js ends one: a 400...).
      await jsm.consumers.delete(name, 'w');
      pulls[0]?.stop();
      // Consumed again 1 s later: consume() answered, the consumer still missing.
      expect(await until(() => pulls.length === 2, 10_000)).toBe(true);
      // Room for the old code's `resumed` (told as consume() answered) and this one's check.
      await sleep(1_500);
      expect(statuses.map((s) => s.type)).toEqual(['lost']);
      await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
      expect(await until(() => statuses.length === 2, 15_000)).toBe(true);
      expect(statuses.map((s) => s.type)).toEqual(['lost', 'resumed']);
      await js.publish(`${name}.a`, 'after', { msgID: 'c33-after' });
      expect(await until(() => runs.length === 1, 15_000)).toBe(true);
      expect(runs).toEqual(['after']);
      expect(statuses.map((s) => s.type)).toEqual(['lost', 'resumed']);
    } finally {
      await idem.stop(5_000);
    }
  });
});
