// consrev3: close() gives back at once a message that has not reached the store (its key or
// payload function pending), but not one waiting in the processor for the store to come back
// (the store-outage wait between two acquisitions: one was sent, so close() left it). Without a
// stop signal (the generic messageProcessor) it stayed held until its next try, `retryDelayMs`
// later (here 30 s), unacked meanwhile, its hold timer keeping the process alive. Now close()
// ends that wait as a stop signal does: given back at once, nothing more sent to the store.
import type { IdempotencyStore } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { expect, it } from 'vitest';
import { messageProcessor } from '../src/index.js';
import { redisBed, uniqueName } from './brokers.js';
import { until } from './late-store.js';
import { within } from './silent-proxy.js';

const { redis, prefix } = redisBed('consrev3-outage');

it('messageProcessor: a message in its store-outage wait is given back at close(), no acquisition sent after it', async () => {
  let acquires = 0;
  const runs: string[] = [];
  const inner = createRedisStore({ client: redis, keyPrefix: prefix });
  // Unreachable: every acquisition fails at once.
  const store = new Proxy(inner, {
    get(target, name, receiver) {
      if (name !== 'acquire') return Reflect.get(target, name, receiver);
      return async () => {
        acquires += 1;
        throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
      };
    },
  }) as IdempotencyStore;
  const p = messageProcessor<{ id: string }, unknown>(
    {
      store,
      // Tried again every 30 s, for up to a lease (2 min), before the fix even after close().
      leaseMs: 120_000,
      retryDelayMs: 30_000,
      handler: async (m) => {
        runs.push(m.id);
        return m.id;
      },
    },
    {
      defaultKey: (m) => m.id,
      body: () => new Uint8Array(),
      defaultScope: () => ['consrev3', 'outage'],
    },
  );
  const waiting = p.process({ id: uniqueName('k') });
  expect(await until(() => acquires === 1, 10_000)).toBe(true);
  p.close();
  // Before the fix: 'timeout' (held until the next try, 30 s on).
  const given = await within(waiting, 10_000);
  expect(given).toMatchObject({ action: 'retry', status: 'failed' });
  await p.idle();
  expect([acquires, runs]).toEqual([1, []]);
});
