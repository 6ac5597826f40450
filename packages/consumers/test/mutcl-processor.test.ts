import { createIdempotency, type IdempotencyStore } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { type ConsumerOptions, messageProcessor } from '../src/index.js';
import { uniqueName } from './brokers.js';

// mutcl (second mutation audit): what the consumers' state machine must keep, checked on the
// processor the broker helpers share (Redis store, no broker: every broker helper answers
// its dispositions alike).

interface Msg {
  id?: string;
  body: string;
}

describe('mutcl: the message processor', () => {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  const prefix = `${uniqueName('idem-mutcl')}:`;
  const store: IdempotencyStore = createRedisStore({ client: redis, keyPrefix: prefix });
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });
  const processor = (options: Partial<ConsumerOptions<Msg, unknown>>, scope = uniqueName('q')) =>
    messageProcessor<Msg, unknown>(
      { store, handler: async (m) => m.body, retryDelayMs: 50, ...options },
      {
        defaultKey: (m) => m.id,
        body: (m) => new TextEncoder().encode(m.body),
        defaultScope: () => ['test', scope],
      },
    );

  it('a key string is used as it is: the record is the one another engine finds under that key', async () => {
    // README: "a key string (1..255 printable ASCII) as it is, any other JSON value hashed".
    // An HTTP endpoint (or a Lambda) and a consumer taking the same order under one scope
    // share its outcome only if the key is not hashed on one side alone.
    const scope = uniqueName('shared');
    const p = processor({ payload: false, scope: ['orders', scope] });
    expect(await p.process({ id: 'order-7', body: 'shipped' })).toMatchObject({
      action: 'ack',
      status: 'processed',
    });
    let ran = false;
    const other = await createIdempotency<string>({ store }).execute(
      { key: 'order-7', scope: ['orders', scope], fingerprint: '' },
      async () => {
        ran = true;
        return 'again';
      },
    );
    expect(ran).toBe(false);
    expect(other).toEqual({ value: 'shipped', replayed: true });
  });
});
