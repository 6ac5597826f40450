// consumers32: JetStream's fallback key (a message without Nats-Msg-Id) is
// `stream:seq:timestampNanos`; a message whose own Nats-Msg-Id was spelled exactly like it had
// the same key, and one message's recorded outcome was replayed for the other (its handler
// never ran). On the real NATS JetStream and Redis.
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { AckPolicy, headers } from 'nats';
import { describe, expect, it } from 'vitest';
import { consumeJetStream, type JsMsgLike, jetStreamMessageKey } from '../src/index.js';
import { jetStreamBed } from './brokers.js';

const bed = jetStreamBed('consumers32-key');

const fake = (stream: string, seq: number, id?: string): JsMsgLike =>
  ({
    data: new Uint8Array(),
    seq,
    info: {
      stream,
      consumer: 'w',
      streamSequence: seq,
      redeliveryCount: 1,
      timestampNanos: 1_733_000_000_000_000_000,
    },
    headers: { get: (name: string) => (name === 'Nats-Msg-Id' && id !== undefined ? id : '') },
  }) as unknown as JsMsgLike;

describe('consumers32: a Nats-Msg-Id spelled like a fallback key', () => {
  it('is a message of its own on the real JetStream: both handlers run, nothing replayed', {
    timeout: 20_000,
  }, async () => {
    const { jsm, name, js } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    const runs: string[] = [];
    const statuses: string[] = [];
    let firstKey = '';
    const consumer = await consumeJetStream({
      store: createRedisStore({ client: bed.redis, keyPrefix: bed.prefix }),
      consumer: await js.consumers.get(name, 'w'),
      handler: async (message) => {
        if (runs.length === 0) firstKey = jetStreamMessageKey(message);
        runs.push(message.headers?.get('Nats-Msg-Id') || 'no id');
        return 'billed';
      },
      onMessage: (r) => statuses.push(r.status),
    });
    try {
      // The same body twice (payload alike): only the key tells them apart.
      await js.publish(`${name}.a`, 'charge 10');
      const until = async (n: number) => {
        const deadline = performance.now() + 8_000;
        while (statuses.length < n && performance.now() < deadline) await sleep(20);
      };
      await until(1);
      expect(firstKey).toMatch(new RegExp(`^${name}:1:\\d+$`));
      const h = headers();
      h.set('Nats-Msg-Id', firstKey);
      await js.publish(`${name}.a`, 'charge 10', { headers: h });
      await until(2);
      expect(statuses).toEqual(['processed', 'processed']);
      expect(runs).toEqual(['no id', firstKey]);
    } finally {
      await consumer.stop(5_000);
    }
  });

  it('keys of existing users are unchanged: ordinary ids and every fallback key', () => {
    expect(jetStreamMessageKey(fake('ORDERS', 5, 'order-5'))).toBe('order-5');
    expect(jetStreamMessageKey(fake('ORDERS', 5, 'order:42'))).toBe('order:42');
    expect(jetStreamMessageKey(fake('ORDERS', 5, 'OTHER:42'))).toBe('OTHER:42');
    expect(jetStreamMessageKey(fake('ORDERS', 5))).toBe('ORDERS:5:1733000000000000000');
    // Marked: the shapes a fallback key has, and the mark itself (so the marking is one to one).
    expect(jetStreamMessageKey(fake('ORDERS', 7, 'ORDERS:5:1733000000000000000'))).toBe(
      'Nats-Msg-Id.ORDERS:5:1733000000000000000',
    );
    expect(jetStreamMessageKey(fake('ORDERS', 7, 'ORDERS:5'))).toBe('Nats-Msg-Id.ORDERS:5');
    expect(jetStreamMessageKey(fake('ORDERS', 7, 'Nats-Msg-Id.x'))).toBe(
      'Nats-Msg-Id.Nats-Msg-Id.x',
    );
    // A stream named like the mark: its fallback key never equals a marked id's key.
    const ids = [
      '5:1733000000000000000',
      ':5:1733000000000000000',
      'Nats-Msg-Id:5:1733000000000000000',
    ];
    const fallback = jetStreamMessageKey(fake('Nats-Msg-Id', 5));
    for (const id of ids)
      expect(jetStreamMessageKey(fake('Nats-Msg-Id', 9, id))).not.toBe(fallback);
  });
});
