import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  createDigestParts,
  createPairDigest,
  digestParts,
  storageKeyDigest,
  textWriters,
} from '../src/encoding.js';
import { canonicalJson, deriveStorageKey } from '../src/index.js';
import { portableSha256Hex } from '../src/sha256.js';

// The storage key's digest writes its fixed parts once; it must stay digestParts' bytes, or
// every record written before would stop matching.
const runs = process.env.CI ? 300 : 1_000;
const nodeSha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const writers = {
  buffer: textWriters.buffer as NonNullable<typeof textWriters.buffer>,
  web: textWriters.web,
};

describe('pair digest (the storage key)', () => {
  it('equals digestParts for any two values, on both ways of writing UTF-8', () => {
    for (const [name, text] of Object.entries(writers)) {
      const pair = createPairDigest(text, portableSha256Hex, 'idem/storage-key/v1', 'scope', 'key');
      const parts = createDigestParts(text, portableSha256Hex);
      fc.assert(
        fc.property(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' }), (a, b) => {
          expect(pair(a, b), name).toBe(
            parts('idem/storage-key/v1', [
              ['scope', a],
              ['key', b],
            ]),
          );
        }),
        { numRuns: runs },
      );
    }
  });

  it('equals digestParts around its reused buffer size and past it, then again below it', () => {
    const pair = createPairDigest(writers.buffer, nodeSha256, 'd', 'first', 'second');
    const parts = createDigestParts(writers.buffer, nodeSha256);
    for (const length of [0, 1, 1_300, 1_400, 4_000, 5_000, 22_000, 70_000, 10, 200_000, 3]) {
      const a = 'é'.repeat(length);
      const b = `x${'€'.repeat(length >> 1)}`;
      expect(pair(a, b), `length ${length}`).toBe(
        parts('d', [
          ['first', a],
          ['second', b],
        ]),
      );
    }
  });

  it('is what deriveStorageKey answers, null scope included', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.constant(null), fc.jsonValue()),
        fc.stringMatching(/^[\x20-\x7e]{1,255}$/),
        (scope, key) => {
          const json = canonicalJson(scope);
          const expected = digestParts('idem/storage-key/v1', [
            ['scope', json],
            ['key', key],
          ]);
          expect(storageKeyDigest(json, key)).toBe(expected);
          expect(deriveStorageKey(scope as never, key)).toBe(expected);
        },
      ),
      { numRuns: runs },
    );
  });
});
