// consstop30: JetStream, a message the server sent for the pull while the broker was silent
// towards this connection (a loopback TCP proxy that holds both directions, then delivers,
// in order: the broker comes back), received once a stop(300) whose drain went unanswered has
// resolved: no key function, no handler (the pull was stopped at the deadline). Passes on the
// source before consstop30 too: JetStream hands nothing to a handler once stop() was called.
import { createRedisStore } from '@idem/store-redis';
import type { JsMsg } from 'nats';
import { describe, expect, it } from 'vitest';
import { consumeJetStream } from '../src/index.js';
import { redisBed } from './brokers.js';
import { until } from './late-store.js';
import { silentJetStream, within } from './silent-proxy.js';

const { redis, prefix } = redisBed('consstop30-js');

describe('consstop30: JetStream, a delivery once a stop() gave up on the drain', () => {
  it('received after stop() resolved: its key function and handler never called', {
    timeout: 60_000,
  }, async () => {
    const { proxy, direct, nc, stream, close } = await silentJetStream('consstop30_js');
    try {
      const keyed: number[] = [];
      const handled: number[] = [];
      const consumer = await consumeJetStream<JsMsg, string>({
        store: createRedisStore({ client: redis, keyPrefix: prefix }),
        consumer: await nc.jetstream().consumers.get(stream, 'c'),
        key: (m) => {
          keyed.push(m.seq);
          return `k-${m.info.streamSequence}`;
        },
        handler: async (m) => {
          handled.push(m.seq);
          return 'ok';
        },
      });
      await direct.jetstream().publish(`${stream}.a`, 'one');
      expect(await until(() => handled.length === 1, 10_000)).toBe(true);
      proxy.hold();
      await direct.jetstream().publish(`${stream}.a`, 'two');
      // The server sent it for the pull; the proxy holds it.
      expect(await until(() => proxy.heldDown() > 0, 10_000)).toBe(true);
      expect(await within(consumer.stop(300), 10_000)).not.toBe('timeout');
      proxy.resume();
      // A round trip through the proxy once it forwards again: what it held has arrived.
      expect(await within(nc.flush(), 5_000)).not.toBe('timeout');
      expect([keyed, handled]).toEqual([[1], [1]]);
      // The client drops it with the pull's subscription (stopped at the deadline): seen
      // ack-pending and not redelivered right after, it comes back at ack_wait, as after a
      // crash (README: the window of the last round trip before the deadline), not nak'ed.
      expect(consumer.inFlight).toBe(0);
    } finally {
      await close();
    }
  });
});
