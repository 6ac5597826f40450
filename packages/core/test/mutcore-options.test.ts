// Mutation audit (mutcore): every bad option is a clear INVALID_INPUT when the engine (or the
// codec) is created, never a failure at request time after the operation ran. Cases that
// options-validation.test.ts and not-recorded.test.ts did not cover.
import { describe, expect, it } from 'vitest';
import { createIdempotency, createOutcomeCodec, type IdempotencyOptions } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

const invalid = expect.objectContaining({ code: 'INVALID_INPUT' });
const create = (options: Record<string, unknown>) =>
  createIdempotency({ store: new FakeStore(), ...options } as IdempotencyOptions);

describe('mutcore: createIdempotency refuses', () => {
  const { extend: _extend, ...withoutExtend } = Object.assign(
    Object.create(null) as Record<string, unknown>,
    {
      capabilities: { clock: 'injectable' },
      acquire: async () => ({}),
      complete: async () => ({}),
      release: async () => ({}),
      extend: async () => ({}),
      get: async () => undefined,
    },
  );
  it.each<[string, Record<string, unknown>]>([
    // A heartbeat of the whole lease renews it only as it passes.
    ['heartbeatMs equal to leaseMs', { leaseMs: 1_000, heartbeatMs: 1_000 }],
    ['heartbeatMs NaN', { heartbeatMs: Number.NaN }],
    ['heartbeatMs 0', { heartbeatMs: 0 }],
    ['leaseMs 0', { leaseMs: 0 }],
    // setTimeout fires at once past 2^31 - 1 ms.
    ['leaseMs past a timer', { leaseMs: 2 ** 31 }],
    ['storeTimeoutMs past a timer', { storeTimeoutMs: 2 ** 31 }],
    ['completionWaitMs past a timer', { completionWaitMs: 2 ** 31 }],
    ['completionWaitMs 0', { completionWaitMs: 0 }],
    ['maxHoldMs NaN', { maxHoldMs: Number.NaN }],
    ['retentionMs negative', { retentionMs: -1 }],
    ['maxOutcomeBytes fractional', { maxOutcomeBytes: 1.5 }],
    ['a store without extend', { store: withoutExtend }],
    // An async generator function answers an async iterator, never true or false.
    [
      'an async generator as isFinal',
      {
        isFinal: async function* () {
          yield true;
        },
      },
    ],
    ['an async isFinal', { isFinal: async () => true }],
    ['an outcomeCodec without open', { outcomeCodec: { seal: async (b: Uint8Array) => b } }],
  ])('%s', (_name, options) => {
    expect(() => create(options)).toThrow(invalid);
  });

  it('takes the lower of maxOutcomeBytes and the store limit', () => {
    expect(
      createIdempotency({ store: new FakeStore(undefined, 300), maxOutcomeBytes: 1_000 }).settings
        .maxOutcomeBytes,
    ).toBe(300);
  });
});

describe('mutcore: createOutcomeCodec refuses', () => {
  const key = new Uint8Array(32).fill(7);
  it.each<[string, Parameters<typeof createOutcomeCodec>[0]]>([
    [
      'a key id used twice',
      {
        keys: [
          { id: 'a', key },
          { id: 'a', key },
        ],
      },
    ],
    ['a key id with a space', { keys: [{ id: 'a b', key }] }],
    ['an empty key id', { keys: [{ id: '', key }] }],
    ['a key of 16 bytes', { keys: [{ id: 'a', key: new Uint8Array(16) }] }],
    ['a negative threshold', { compressAboveBytes: -1 }],
    ['a fractional threshold', { compressAboveBytes: 1.5 }],
  ])('%s', (_name, options) => {
    expect(() => createOutcomeCodec(options)).toThrow(invalid);
  });
});
