import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { digestParts, storageKeyDigest } from '../src/encoding.js';
import { canonicalJson, deriveStorageKey } from '../src/index.js';

// Review of wt/corecpu: the storage key digest, checked against an independent reference of
// the v1 encoding (8-byte big-endian length + UTF-8, lone surrogates as U+FFFD, as Buffer writes)
// rather than against the rewritten digestParts, which shares the new writeText.
const u64 = (n: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
};
const lp = (s: string) => {
  const bytes = Buffer.from(s, 'utf8');
  return Buffer.concat([u64(bytes.length), bytes]);
};
const reference = (scopeJson: string, key: string) =>
  createHash('sha256')
    .update(
      Buffer.concat([
        lp('idem/storage-key/v1'),
        u64(2),
        lp('scope'),
        lp(scopeJson),
        lp('key'),
        lp(key),
      ]),
    )
    .digest('hex');

const runs = process.env.CI ? 500 : 3_000;
const lengths = [
  0, 1, 63, 64, 65, 127, 128, 1_365, 1_366, 4_095, 4_096, 4_097, 21_845, 65_536, 70_000,
];

describe('review: storage key digest equals the v1 reference', () => {
  it('any two strings (binary units: lone surrogates, non-ASCII, ASCII)', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme-ascii' }), fc.string()),
        fc.oneof(fc.string({ unit: 'binary' }), fc.string()),
        (a, b) => {
          const expected = reference(a, b);
          expect(storageKeyDigest(a, b)).toBe(expected);
          expect(
            digestParts('idem/storage-key/v1', [
              ['scope', a],
              ['key', b],
            ]),
          ).toBe(expected);
        },
      ),
      { numRuns: runs },
    );
  });

  it('boundary lengths, ASCII with one non-ASCII unit at each end, mixed orders of size', () => {
    const fills = ['a', 'é', '€', '😀', '\ud800', '\udc00', 'a\ud800'];
    const sizes = [...lengths, 10, 200_000, 3, 64, 4_096];
    for (const fill of fills)
      for (const n of sizes) {
        const base = fill.repeat(Math.ceil(n / fill.length)).slice(0, n);
        for (const a of [base, `${base}é`, `é${base}`, `${base.slice(0, -1)}\udfff`]) {
          const b = `k${base.slice(0, 60)}`;
          expect(storageKeyDigest(a, b), `${JSON.stringify(fill)} x ${n}`).toBe(reference(a, b));
          expect(storageKeyDigest(b, a), `${JSON.stringify(fill)} x ${n} (swapped)`).toBe(
            reference(b, a),
          );
        }
      }
  });

  it('deriveStorageKey for any JSON scope and printable key (null and undefined scope alike)', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.constant(null), fc.jsonValue(), fc.string({ unit: 'binary' })),
        fc.stringMatching(/^[\x20-\x7e]{1,255}$/),
        (scope, key) => {
          expect(deriveStorageKey(scope as never, key)).toBe(
            reference(canonicalJson(scope as never), key),
          );
        },
      ),
      { numRuns: runs },
    );
  });

  it('no two distinct (scope, key) pairs share a digest where one part ends as the other begins', () => {
    const seen = new Map<string, string>();
    for (const [s, k] of [
      ['"a"', 'bc'],
      ['"ab"', 'c'],
      ['null', 'x'],
      ['"null"', 'x'],
      ['"\u00e9"', 'x'],
      ['"\\u00e9"', 'x'],
    ] as const) {
      const d = storageKeyDigest(s, k);
      expect(seen.get(d), `${s}/${k}`).toBeUndefined();
      seen.set(d, `${s}/${k}`);
    }
  });
});
