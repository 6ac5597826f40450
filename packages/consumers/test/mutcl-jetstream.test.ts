import { createRedisStore } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { consumeJetStream, type JsMsgLike, jetStreamMessageKey } from '../src/index.js';
import { fakeMessages, message } from './fake-jetstream.js';

// mutcl (second mutation audit): the JetStream helper's key and scope rules, on fakes.

describe('mutcl: JetStream keys and scope', () => {
  it("the default key is the publisher's Nats-Msg-Id when the message has one (a resend outside the duplicate window is the same message)", () => {
    const headers = (id: string) => ({ get: (name: string) => (name === 'Nats-Msg-Id' ? id : '') });
    const first: JsMsgLike = { ...message(1, []), headers: headers('order-5') };
    const resent: JsMsgLike = { ...message(9, []), headers: headers('order-5') };
    expect(jetStreamMessageKey(first)).toBe('order-5');
    expect(jetStreamMessageKey(resent)).toBe(jetStreamMessageKey(first));
    // Without the header: the stream position.
    expect(jetStreamMessageKey(message(1, []))).not.toBe(jetStreamMessageKey(message(9, [])));
  });

  it('a consumer whose config has an empty durable_name (and no name) is not durable: refused without a scope', async () => {
    const { messages } = fakeMessages(undefined);
    const consumer = {
      consume: async () => messages,
      info: async () => ({ name: 'Xk2p9', config: { durable_name: '', ack_policy: 'explicit' } }),
    };
    // (Never connected: the consumer is refused before any message.)
    const client = new Redis({ lazyConnect: true });
    try {
      await expect(
        consumeJetStream({
          store: createRedisStore({ client }),
          consumer,
          handler: async () => 'x',
        }),
      ).rejects.toThrow(/needs an explicit scope/);
    } finally {
      client.disconnect();
    }
  });
});
