// Review round 13 (rev13client): what consumeAmqp / consumeJetStream do with a missing broker
// client. No broker call is made (the check comes first), so no broker is needed here.
import { InvalidInputError } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { consumeAmqp, consumeJetStream } from '../src/index.js';

describe('rev13 consumers: options', () => {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2, lazyConnect: true });
  const store = createRedisStore({ client: redis, keyPrefix: 'rev13-options-unused:' });
  afterAll(() => redis.disconnect());

  // FIXED (was FINDING LOW): `channel` (consumeAmqp) and `consumer` (consumeJetStream) are not checked:
  // a missing one (a config typo from JS, an `await` forgotten: a Promise where the channel
  // belongs) fails with a bare TypeError ("Cannot read properties of undefined (reading
  // 'prefetch')", "consumer.consume is not a function"), while every other option (handler,
  // key, payload, scope, prefetch, store…) gives InvalidInputError naming it. A missing options
  // object is a destructuring TypeError. Fix: they are checked first, InvalidInputError.
  it('a missing or wrong channel / consumer / options object is an InvalidInputError naming it', {
    timeout: 5_000,
  }, async () => {
    const handler = async () => 'ok';
    const outcomes: string[] = [];
    const cases: [string, () => Promise<unknown>][] = [
      ['no channel', () => consumeAmqp({ store, queue: 'q', handler } as never)],
      [
        'a channel promise',
        () => consumeAmqp({ store, queue: 'q', handler, channel: Promise.resolve({}) } as never),
      ],
      ['no consumer', () => consumeJetStream({ store, handler } as never)],
      ['consumer {}', () => consumeJetStream({ store, handler, consumer: {} } as never)],
      ['no options (amqp)', () => consumeAmqp(undefined as never)],
      ['no options (jetstream)', () => consumeJetStream(undefined as never)],
    ];
    for (const [name, start] of cases) {
      try {
        await start();
        outcomes.push(`${name}: accepted`);
      } catch (error) {
        outcomes.push(
          `${name}: ${error instanceof InvalidInputError ? 'typed' : (error as Error).name}`,
        );
      }
    }
    expect(outcomes).toEqual(cases.map(([name]) => `${name}: typed`));
  });
});

describe('rev13 consumers: consumerTimeoutMs', () => {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2, lazyConnect: true });
  const store = createRedisStore({ client: redis, keyPrefix: 'rev13-options-unused:' });
  afterAll(() => redis.disconnect());
  const fakeChannel = () => ({
    prefetch: async () => {},
    consume: async () => ({ consumerTag: 't' }),
    cancel: async () => {},
    ack() {},
    nack() {},
  });

  it('is a positive number of ms or Infinity; anything else is refused before any broker call', {
    timeout: 5_000,
  }, async () => {
    const outcomes: string[] = [];
    for (const consumerTimeoutMs of [0, -1, Number.NaN, '60000', 1_000, Number.POSITIVE_INFINITY]) {
      try {
        const consumer = await consumeAmqp({
          store,
          queue: 'q',
          handler: async () => 'ok',
          channel: fakeChannel(),
          consumerTimeoutMs: consumerTimeoutMs as number,
        });
        await consumer.stop(100);
        outcomes.push('accepted');
      } catch (error) {
        outcomes.push(error instanceof InvalidInputError ? 'typed' : (error as Error).name);
      }
    }
    expect(outcomes).toEqual(['typed', 'typed', 'typed', 'typed', 'accepted', 'accepted']);
  });
});
