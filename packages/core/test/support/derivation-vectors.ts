import { describe, expect, it } from 'vitest';
import type * as Core from '../../src/index.js';

// Records in every store were written under these derivations: a storage key that changed
// would orphan them (a retry would run again), a fingerprint that changed would answer 422
// to an honest retry. The digests below were computed by the code as it was before it was
// made faster (commit a4b6a3b); any change to them is a change of the stored format.
const encoder = new TextEncoder();

/**
 * Registers the vector tests for `core`, the module as one runtime loads it: every path core
 * can take on a runtime (native hashing, portable hashing) must give these very digests.
 */
export function describeDerivationVectors(label: string, core: typeof Core): void {
  const { batchItemKey, canonicalJson, deriveKey, deriveStorageKey, fingerprint } = core;
  describe(`derivations stay what stored records were written with (${label})`, () => {
    it('fingerprints', () => {
      expect(
        fingerprint({
          method: 'post',
          route: '/charges',
          body: {
            b: [1, -0, 1e21, 0.1, 'x'],
            a: { z: null, y: true },
            é: '\ud800',
            __proto__x: 1,
          },
          extras: { query: '?a=1', 'content-type': 'application/json' },
        }),
      ).toBe('09c18db428bd96eeed44fce473859d87587157a22ad4dd7de70a771dc37ba13f');
      expect(
        fingerprint({
          method: 'PUT',
          route: '/files',
          body: encoder.encode('raw \u00e9 bytes'),
          extras: { query: '' },
        }),
      ).toBe('67862545ca44fa140451381a7febd040055f65bb4212bd6dc1a89e43c17629bc');
      expect(
        fingerprint({
          method: 'POST',
          route: '/x',
          body: { a: 1, meta: { trace: 't', keep: 2 }, ts: 5 },
          exclude: ['ts', 'meta.trace'],
        }),
      ).toBe('89db6862c64896fad876c2f30a1c0b5c8fa6bfa4a074dc133f0ba74b6870b934');
      expect(
        fingerprint({ extras: { 'header:x-v': null, 'extra:n': { b: [], a: {} }, z: 'ü' } }),
      ).toBe('300dacef36a1d98c64da791e9ef152a7e07c896560ee8695c894330726841e5e');
      expect(fingerprint({})).toBe(
        '731cbee149d450653a62495344cdc7f4084d58087f8b18f512a9727e967ca73c',
      );
    });

    it('storage keys', () => {
      expect(deriveStorageKey(['idem/http/v1', 'acct_1', 'POST /charges'], 'key-1')).toBe(
        '0ba05fdf6aff76886041f1f4bcffa8be662650a95e17fce207b361edd179d106',
      );
      expect(deriveStorageKey(null, 'k')).toBe(
        '931a5e01e4fb4b2900a8ef48e3fa736b77026c31501e463e6c73430f291636a2',
      );
      expect(
        deriveStorageKey({ tenant: 't', nested: { list: [1, 'two'] } }, '"quoted" key ~!'),
      ).toBe('0fca17443e2113a5e7ea99dd43b5fcb5bd50a0c2b84e6cec7dfb19034fa83bed');
      expect(deriveStorageKey(['ünï', { ключ: 'значение' }], 'k')).toBe(
        '3e8fc15c413c50563d2c692aa9e1b5de48a06a1b51e67a99b4f72b0aa2697cd0',
      );
    });

    it('derived keys', () => {
      expect(deriveKey({ user: 'u', prompt: 'p\n', model: ['m', 1] }, { prefix: 'p-' })).toBe(
        'p-6f882f699eb5237acb0ee99802fdbbac438e99b5a720389a56f38e491f9195e5',
      );
      expect(batchItemKey('batch-1', 7)).toBe(
        '02871ac1d723c4ea86ca4fbc0c92ddb9252c0b1acb59a56b936f3c3891edb71e',
      );
    });

    it('canonical JSON text', () => {
      expect(
        canonicalJson({
          b: [1, { d: 2, c: [] }],
          a: '\u2028\ud83d\ude00',
          n: -0,
          big: 1e300,
          small: 5e-324,
        }),
      ).toBe('{"a":"\u2028\ud83d\ude00","b":[1,{"c":[],"d":2}],"big":1e+300,"n":0,"small":5e-324}');
    });
  });
}
