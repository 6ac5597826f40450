import { setTimeout as sleep } from 'node:timers/promises';
import { createIdempotency, type IdempotencyStore } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { type ConsumerOptions, messageProcessor, OutcomeNotKeptError } from '../src/index.js';
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

  /** `store` whose `acquire` fails (a refused connection) until `outage.over`. */
  const outageStore = (outage: { over: boolean }): IdempotencyStore =>
    new Proxy(store, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver);
        if (typeof value !== 'function') return value;
        if (prop !== 'acquire') return value.bind(target);
        return (...args: unknown[]) => {
          if (!outage.over) return Promise.reject(new Error('ECONNREFUSED (test outage)'));
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });

  it('a message waiting out a store outage stops trying once maxHoldMs gave it back: its handler never runs after', async () => {
    // maxHoldMs (300) shorter than the lease (2 s): the message is given back at 300 ms; a
    // wait bounded by the lease alone went on trying, and ran the handler once the store came
    // back, for a message already nacked (its redelivery, elsewhere, meets that run).
    const outage = { over: false };
    let runs = 0;
    const p = processor({
      store: outageStore(outage),
      leaseMs: 2_000,
      maxHoldMs: 300,
      retryDelayMs: 50,
      handler: async () => {
        runs += 1;
        return 'ran';
      },
    });
    const disposition = await p.process({ id: 'held-1', body: 'x' });
    expect(disposition).toMatchObject({ action: 'retry', status: 'failed' });
    outage.over = true;
    await sleep(800);
    expect(runs).toBe(0);
  });

  it('a success the policy does not keep is given back (OutcomeNotKeptError), never acked: the redelivery runs again', async () => {
    let runs = 0;
    const p = processor({
      isFinal: () => false,
      handler: async () => {
        runs += 1;
        return { status: 503 };
      },
    });
    const message = { id: 'not-kept-1', body: 'x' };
    const first = await p.process(message);
    expect(first).toMatchObject({ action: 'retry', status: 'failed' });
    expect(first.error).toBeInstanceOf(OutcomeNotKeptError);
    expect(await p.process(message)).toMatchObject({ action: 'retry', status: 'failed' });
    expect(runs).toBe(2);
  });
});
