// rev31a (review of client31): a failure the policy keeps that cannot be stored is acked,
// `processed`, on the strength of the not-recorded marker the engine writes for it. When the
// store refuses that marker (the owner-checked write answers `not_owner`: the key was taken
// over) the engine threw the same OUTCOME_NOT_RECORDED / OUTCOME_TOO_LARGE, and the message was
// acked with no marker behind it. It goes back instead, as README's "the lease was lost" row,
// while a marker that landed still acks at once (client31's case). Checked on the processor
// every broker helper shares, over Redis.
import {
  everythingFinal,
  type IdempotencyStore,
  markerFailureOf,
  OutcomeNotRecordedError,
} from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL, refusingCompletes } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { messageProcessor } from '../src/index.js';
import { uniqueName } from './brokers.js';

interface Msg {
  id: string;
}

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
const prefix = `${uniqueName('rev31a-refused')}:`;
afterAll(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

/** The Redis store, but every `complete` (here only the marker's) refused as `not_owner`. */
function refusingStore(): { store: IdempotencyStore; completes: () => number } {
  let completes = 0;
  const base = createRedisStore({ client: redis, keyPrefix: prefix });
  const store = refusingCompletes(base, () => completes++);
  return { store, completes: () => completes };
}

const throwers: [string, () => unknown, string][] = [
  ['a null-prototype object', () => Object.create(null), 'OUTCOME_NOT_RECORDED'],
  ['an Error past maxOutcomeBytes', () => new Error('x'.repeat(64 * 1024)), 'OUTCOME_TOO_LARGE'],
];

describe('rev31a: a kept failure whose marker write is refused', () => {
  it.each(throwers)('handler throws %s: given back, not acked', async (_name, make, code) => {
    const { store, completes } = refusingStore();
    let runs = 0;
    const processor = messageProcessor<Msg, unknown>(
      {
        store,
        isFinal: everythingFinal,
        maxOutcomeBytes: 16 * 1024,
        retryDelayMs: 50,
        handler: async () => {
          runs++;
          throw make();
        },
      },
      {
        defaultKey: (m) => m.id,
        body: (m) => new TextEncoder().encode(m.id),
        defaultScope: () => ['rev31a', uniqueName('q')],
      },
    );
    const disposition = await processor.process({ id: 'm1' });
    expect(runs).toBe(1);
    expect(completes()).toBe(1);
    expect(disposition).toMatchObject({ action: 'retry', status: 'failed' });
    // The report says why: the marker write's own error (the lease was lost), not the
    // OUTCOME_* code that would mean "a marker answers every redelivery".
    const error = (disposition as { error?: unknown }).error;
    expect(error).toMatchObject({ code: 'LEASE_LOST' });
    expect((error as { code?: string }).code).not.toBe(code);
    await processor.close();
  });

  it('a marker that landed: acked at once, processed (client31 kept)', async () => {
    let runs = 0;
    const processor = messageProcessor<Msg, unknown>(
      {
        store: createRedisStore({ client: redis, keyPrefix: prefix }),
        isFinal: everythingFinal,
        retryDelayMs: 50,
        handler: async () => {
          runs++;
          throw Object.create(null);
        },
      },
      {
        defaultKey: (m) => m.id,
        body: (m) => new TextEncoder().encode(m.id),
        defaultScope: () => ['rev31a', uniqueName('q')],
      },
    );
    const disposition = await processor.process({ id: 'm2' });
    expect(disposition).toMatchObject({ action: 'ack', status: 'processed' });
    const error = (disposition as { error?: unknown }).error;
    expect(error).toBeInstanceOf(OutcomeNotRecordedError);
    expect(markerFailureOf(error)).toBeUndefined();
    expect(runs).toBe(1);
    await processor.close();
  });
});
