// rev32a: on the real NATS, consumers started and stopped on one long-lived connection are
// collected once stopped. Each pull hung a reaction on the connection's `closed()` promise
// (one for the connection's life) that held the pull, and through it the whole consumer
// (processor, engine, store), until the connection closed (see rev32a-reconsume.test.ts).
import { createRedisStore } from '@idem/store-redis';
import { AckPolicy } from 'nats';
import { describe, expect, it } from 'vitest';
import { consumeJetStream } from '../src/index.js';
import { jetStreamBed } from './brokers.js';
import { heapAfterGc } from './heap.js';

const bed = jetStreamBed('rev32a-heap');

describe('rev32a: JetStream consumers stopped on a long-lived connection', () => {
  it('are collected, their pulls with them', { timeout: 60_000 }, async () => {
    const { jsm, name, js } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    const pulls: Array<WeakRef<object>> = [];
    const stores: Array<WeakRef<object>> = [];
    for (let i = 0; i < 8; i++) {
      const real = await js.consumers.get(name, 'w');
      const consumer = {
        consume: async (options?: Parameters<typeof real.consume>[0]) => {
          const pulled = await real.consume(options);
          pulls.push(new WeakRef(pulled));
          return pulled;
        },
        info: (cached?: boolean) => real.info(cached),
      } as unknown as typeof real;
      const store = createRedisStore({ client: bed.redis, keyPrefix: bed.prefix });
      stores.push(new WeakRef(store));
      const idem = await consumeJetStream({ store, consumer, handler: async () => 'ok' });
      await idem.stop(5_000);
    }
    await heapAfterGc();
    await heapAfterGc();
    expect(pulls).toHaveLength(8);
    // The first (a one-time cache of the shared Redis client or nats.js) and the last (a
    // reaction still settling) may be held; before, all 8 were.
    expect(pulls.filter((ref) => ref.deref() !== undefined).length).toBeLessThanOrEqual(2);
    expect(stores.filter((ref) => ref.deref() !== undefined).length).toBeLessThanOrEqual(2);
  });
});
