// consumers-late: consumeJetStream's stop() drains the pull's inbox subscription (UNSUB, then
// a PING the broker answers); a broker that went silent (a TCP proxy of our own on a free
// loopback port that stops forwarding, its sockets kept open) never answers, and the drain
// is given up after 5 s: the pull is stopped anyway, the iteration ends, and even
// stop(Infinity) returns. On the real nats.js client and NATS server, Redis store.
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { consumeJetStream } from '../src/index.js';
import { redisBed } from './brokers.js';
import { until } from './late-store.js';
import { silentJetStream, within } from './silent-proxy.js';

const { redis, prefix } = redisBed('silent-drain');

describe('consumers-late: JetStream stop() against a broker gone silent', () => {
  it('stop(Infinity): the unanswered drain is given up (5 s), the pull stopped, stop() returns', async () => {
    const { proxy, direct, nc, stream, close } = await silentJetStream('silent_drain');
    try {
      const handled: number[] = [];
      const consumer = await consumeJetStream({
        store: createRedisStore({ client: redis, keyPrefix: prefix }),
        consumer: await nc.jetstream().consumers.get(stream, 'c'),
        handler: async (message) => {
          handled.push(message.seq);
          return 'ok';
        },
      });
      // The pull is live through the proxy: one message goes through.
      await direct.jetstream().publish(`${stream}.a`, 'one');
      expect(await until(() => handled.length === 1)).toBe(true);
      proxy.pause();
      // Unbounded by its own timeout: only the drain's 5 s bound ends the pull's iteration.
      const result = await within(consumer.stop(Number.POSITIVE_INFINITY), 10_000);
      expect(result).not.toBe('timeout');
      expect(consumer.inFlight).toBe(0);
      expect(handled).toEqual([1]);
    } finally {
      await close();
    }
  });
});
