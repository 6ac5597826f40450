// conslate2: stop(0) (or any stop whose timeoutMs passes first) while the store has not yet
// answered a message's acquisition. No handler starts once stop() resolved, so the key the
// store then grants is released; before the fix that release was sent after stop() resolved,
// met the store's connection the application had closed meanwhile, and the key stayed held
// for a whole lease (30 s): the message's redelivery was given back as a duplicate in progress.
// Now stop() waits for those releases, bounded by the engine's storeTimeoutMs (the acquire's,
// then the release's). Real brokers, Redis store on a connection of the test's own.
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { expect, it } from 'vitest';
import type { MessageReport } from '../src/index.js';
import {
  amqpQueues,
  anotherInstance,
  jetStreamBed,
  jetStreamBench,
  rabbitBench,
} from './brokers.js';
import { lateAcquires, until } from './late-store.js';
import { within } from './silent-proxy.js';

const bed = jetStreamBed('conslate2-zero');
const queues = amqpQueues();

for (const [name, open] of [
  ['RabbitMQ', () => rabbitBench(queues, 'conslate2-zero')],
  ['NATS JetStream', () => jetStreamBench(bed.nc, bed.streams, 'conslate2z')],
] as const) {
  it(`${name}: stop(0) with an acquisition unanswered: its key is released before stop() resolves; the redelivery runs at once`, {
    timeout: 30_000,
  }, async () => {
    const bench = await open();
    // The application's store connection, closed right after stop() as a shutdown does.
    const client = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
    try {
      const { store, log } = lateAcquires(
        createRedisStore({ client, keyPrefix: bed.prefix }),
        500,
        (n) => n === 1,
      );
      const runs: string[] = [];
      const seen: Array<[string, unknown]> = [];
      const first = await bench.start(store, {
        handler: async () => {
          runs.push('first');
          return 'first';
        },
        onMessage: (r: MessageReport<unknown>) =>
          seen.push([r.status, (r.error as { code?: unknown } | undefined)?.code]),
      });
      await bench.publish();
      expect(await until(() => log.acquires === 1)).toBe(true);
      await first.stop(0);
      const releasedAtStop = [...log.releases];
      client.disconnect();
      expect(releasedAtStop).toEqual([{ ok: true }]);
      expect(await until(() => seen.length > 0)).toBe(true);
      expect([seen, runs]).toEqual([[['failed', 'HANDLER_NOT_STARTED']], []]);
      // Another instance (its own store connection): the key is free, the message runs now.
      const { statuses, runs: second } = await anotherInstance(
        bench,
        createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
      );
      expect([statuses, second]).toEqual([['processed'], ['second']]);
    } finally {
      client.disconnect();
      await bench.close();
    }
  });
}

it("RabbitMQ: an acquisition the store never answers holds stop(0) no longer than the engine's storeTimeoutMs bounds", {
  timeout: 30_000,
}, async () => {
  const bench = await rabbitBench(queues, 'conslate2-zero-hung');
  try {
    let acquires = 0;
    const inner = createRedisStore({ client: bed.redis, keyPrefix: bed.prefix });
    // A store that takes the acquisition and never answers (a server that froze).
    const hung = new Proxy(inner, {
      get(target, name, receiver) {
        if (name !== 'acquire') return Reflect.get(target, name, receiver);
        return () => {
          acquires += 1;
          return new Promise(() => {});
        };
      },
    });
    const seen: string[] = [];
    const consumer = await bench.start(hung, {
      storeTimeoutMs: 300,
      onMessage: (r: MessageReport<unknown>) => seen.push(r.status),
    });
    await bench.publish();
    expect(await until(() => acquires === 1)).toBe(true);
    // 2 x 300 ms + 1 s at most; 10 s is far above it even on a loaded machine.
    expect(await within(consumer.stop(0), 10_000)).not.toBe('timeout');
    expect(await until(() => seen.length > 0)).toBe(true);
    expect(seen).toEqual(['failed']);
  } finally {
    await bench.close();
  }
});
