// rev31a (review of client31): an outcome the engine cannot store is answered with
// OUTCOME_TOO_LARGE / OUTCOME_NOT_RECORDED, and a not-recorded marker stands for it, so that
// whoever settles something on that answer (@idem/consumers acks the message) knows a retry is
// answered without running again. When the marker's own write failed (the store down, the key
// taken over) the engine threw exactly the same error. It still does, but now says so:
// `markerFailureOf(error)` gives the marker write's error, and is `undefined` when the marker
// landed.
import { describe, expect, it } from 'vitest';
import {
  createIdempotency,
  everythingFinal,
  markerFailureOf,
  type OutcomeCodec,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

const request = (key: string) => ({ key, scope: ['rev31a'], fingerprint: '' });

/** What `execute` threw (it must throw). */
async function thrown(run: () => Promise<unknown>): Promise<unknown> {
  try {
    await run();
  } catch (error) {
    return error;
  }
  throw new Error('execute did not throw');
}

const operations: [string, () => unknown, string][] = [
  [
    'a kept failure with no text (Object.create(null))',
    () => {
      throw Object.create(null);
    },
    'OUTCOME_NOT_RECORDED',
  ],
  [
    'a kept failure past maxOutcomeBytes',
    () => {
      throw new Error('x'.repeat(4_096));
    },
    'OUTCOME_TOO_LARGE',
  ],
  ['a success past maxOutcomeBytes', () => 'y'.repeat(4_096), 'OUTCOME_TOO_LARGE'],
  ['a success that is not JSON (a BigInt)', () => 1n, 'OUTCOME_NOT_RECORDED'],
];

function engine(store: FakeStore, outcomeCodec?: OutcomeCodec) {
  return createIdempotency<unknown>({
    store,
    isFinal: everythingFinal,
    maxOutcomeBytes: 1_024,
    leaseMs: 1_000,
    heartbeatMs: false,
    storeTimeoutMs: 100,
    completionWaitMs: 100,
    maxHoldMs: 300,
    ...(outcomeCodec ? { outcomeCodec } : {}),
  });
}

describe('rev31a: markerFailureOf', () => {
  it.each(operations)('%s, the marker written: undefined', async (_name, operation, code) => {
    const store = new FakeStore();
    const idem = engine(store);
    const error = await thrown(() => idem.execute(request('a'), async () => operation()));
    expect(error).toMatchObject({ code });
    expect(markerFailureOf(error)).toBeUndefined();
    // The marker answers a retry: it does not run again.
    let again = false;
    const retry = await thrown(() =>
      idem.execute(request('a'), async () => {
        again = true;
      }),
    );
    expect(retry).toMatchObject({ code: 'OUTCOME_NOT_RECORDED' });
    expect(again).toBe(false);
  });

  it.each(operations)('%s, the marker refused (not owner): the failure', async (_n, op, code) => {
    const store = new FakeStore();
    const idem = engine(store);
    const error = await thrown(() =>
      idem.execute(request('b'), async () => {
        // Taken over while it ran: the owner-checked marker write changes nothing.
        for (const record of store.records.values()) record.owner = 'someone-else';
        return op();
      }),
    );
    expect(error).toMatchObject({ code });
    expect(markerFailureOf(error)).toEqual({
      failure: expect.objectContaining({ code: 'LEASE_LOST' }),
    });
  });

  it.each(operations)('%s, the store failing: the failure', async (_n, op, code) => {
    const store = new FakeStore();
    const idem = engine(store);
    store.always.complete = 'throw';
    const error = await thrown(() => idem.execute(request('c'), async () => op()));
    expect(error).toMatchObject({ code });
    expect(markerFailureOf(error)?.failure).toMatchObject({ code: 'STORE_UNAVAILABLE' });
    await idem.drain(2_000);
  });

  it('an outcome the codec cannot seal, the store failing: the failure', async () => {
    const store = new FakeStore();
    const codec: OutcomeCodec = {
      seal: async () => {
        throw new Error('key service down');
      },
      open: async (bytes) => bytes,
    };
    const idem = engine(store, codec);
    store.always.complete = 'throw';
    const error = await thrown(() => idem.execute(request('d'), async () => 'fits'));
    expect(error).toMatchObject({ code: 'OUTCOME_NOT_RECORDED' });
    expect(markerFailureOf(error)?.failure).toMatchObject({ code: 'STORE_UNAVAILABLE' });
    await idem.drain(2_000);
  });

  it('anything else: undefined', () => {
    for (const value of [undefined, null, 1, 'x', new Error('x'), {}]) {
      expect(markerFailureOf(value)).toBeUndefined();
    }
  });
});
